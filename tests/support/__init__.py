"""Helpers the tests share: job folders, server processes, the AWS emulator, Dockerfiles."""
