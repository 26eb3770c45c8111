package imgcls.serving;

/**
 * What `serve` tells the frontend, as system properties (`-Dserving.NAME=VALUE`). The
 * values and the JSON bodies are made by `serve` (serving/frontend.py), which owns every
 * rule and message: this side only applies them.
 */
final class Settings {

    final int batchSize;
    final int maxBatchDelayMs;
    final long maxRequestBytes;
    /** JSON body of the 413 answer to a body over maxRequestBytes. */
    final String tooLargeBody;
    /** JSON body of the 415 answer to a form or multipart body sent for inference. */
    final String formBody;
    /** JSON body of GET /execution-parameters (Batch Transform). */
    final String executionParameters;
    /** Multi-model endpoints: models held at once (0: no limit), and the 507 body beyond. */
    final int maxModels;

    final String modelLimitBody;
    /** Multi-model endpoints: at most this long an unload waits for the model's requests. */
    final int drainTimeoutSeconds;
    /** JSON bodies of the 503 answers to invocations of a model being unloaded or loaded. */
    final String modelUnloadingBody;

    final String modelLoadingBody;
    /** The 503 answers' Retry-After. */
    final int retryAfterSeconds;

    private Settings(
            int batchSize,
            int maxBatchDelayMs,
            long maxRequestBytes,
            String tooLargeBody,
            String formBody,
            String executionParameters,
            int maxModels,
            String modelLimitBody,
            int drainTimeoutSeconds,
            String modelUnloadingBody,
            String modelLoadingBody,
            int retryAfterSeconds) {
        this.batchSize = batchSize;
        this.maxBatchDelayMs = maxBatchDelayMs;
        this.maxRequestBytes = maxRequestBytes;
        this.tooLargeBody = tooLargeBody;
        this.formBody = formBody;
        this.executionParameters = executionParameters;
        this.maxModels = maxModels;
        this.modelLimitBody = modelLimitBody;
        this.drainTimeoutSeconds = drainTimeoutSeconds;
        this.modelUnloadingBody = modelUnloadingBody;
        this.modelLoadingBody = modelLoadingBody;
        this.retryAfterSeconds = retryAfterSeconds;
    }

    static Settings fromSystemProperties() {
        return new Settings(
                Integer.parseInt(required("serving.batch_size")),
                Integer.parseInt(required("serving.max_batch_delay_ms")),
                Long.parseLong(required("serving.max_request_bytes")),
                required("serving.too_large_body"),
                required("serving.form_body"),
                required("serving.execution_parameters"),
                Integer.parseInt(required("serving.max_models")),
                required("serving.model_limit_body"),
                Integer.parseInt(required("serving.drain_timeout_s")),
                required("serving.model_unloading_body"),
                required("serving.model_loading_body"),
                Integer.parseInt(required("serving.retry_after_s")));
    }

    private static String required(String name) {
        String value = System.getProperty(name);
        if (value == null) {
            throw new IllegalArgumentException("system property " + name + " is not set");
        }
        return value;
    }
}
