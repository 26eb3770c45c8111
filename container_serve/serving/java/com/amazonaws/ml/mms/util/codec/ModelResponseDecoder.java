package com.amazonaws.ml.mms.util.codec;

import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.util.messages.Predictions;
import io.netty.buffer.ByteBuf;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.ByteToMessageDecoder;
import io.netty.handler.codec.CorruptedFrameException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Decodes a Python worker's answer to a batch: takes the place of multi-model-server 1.1.11's
 * class of the same name (`serve` puts this jar first on the class path).
 *
 * <p>Why: a worker's answer arrives in pieces once it is larger than a socket read (about 2 KB:
 * a batch of a few requests). Multi-model-server's decoder checks the length of each response
 * header against the bytes received so far instead of waiting for more, so a piece that ends
 * inside a response's headers fails as "Message size exceed limit", and the worker is dropped
 * with the whole batch (500 to every request in it). Single requests rarely hit it: their
 * headers come first, the body last.
 *
 * <p>The frame is multi-model-server's (mms/protocol/otf_message_handler.py,
 * create_predict_response): code, message, then per request its id, content type, status,
 * reason phrase, headers and body, then -1. Every read here waits for its bytes.
 */
public class ModelResponseDecoder extends ByteToMessageDecoder {

    private static final int END = -1;
    /** Thrown when the frame is incomplete: decode() waits for more bytes. */
    private static final RuntimeException INCOMPLETE = new IncompleteFrame();

    private final int maxBufferSize;

    public ModelResponseDecoder(int maxBufferSize) {
        this.maxBufferSize = maxBufferSize;
    }

    @Override
    protected void decode(ChannelHandlerContext ctx, ByteBuf in, List<Object> out) {
        in.markReaderIndex();
        try {
            out.add(readResponse(in));
        } catch (IncompleteFrame e) {
            in.resetReaderIndex();
        }
    }

    private ModelWorkerResponse readResponse(ByteBuf in) {
        ModelWorkerResponse response = new ModelWorkerResponse();
        response.setCode(readInt(in));
        response.setMessage(readString(in));
        List<Predictions> predictions = new ArrayList<>();
        for (int length = readInt(in); length != END; length = readInt(in)) {
            predictions.add(readPrediction(in, length));
        }
        response.setPredictions(predictions);
        return response;
    }

    private Predictions readPrediction(ByteBuf in, int requestIdLength) {
        Predictions prediction = new Predictions();
        prediction.setRequestId(new String(readBytes(in, requestIdLength), StandardCharsets.UTF_8));
        prediction.setContentType(readString(in));
        prediction.setStatusCode(readInt(in));
        prediction.setReasonPhrase(readString(in));
        prediction.setHeaders(readHeaders(in));
        prediction.setResp(readBytes(in, readInt(in)));
        return prediction;
    }

    private Map<String, String> readHeaders(ByteBuf in) {
        int count = readInt(in);
        if (count < 0 || count > maxBufferSize) {
            throw new CorruptedFrameException("Invalid header count: " + count);
        }
        Map<String, String> headers = new HashMap<>();
        for (int i = 0; i < count; i++) {
            String name = readString(in);
            headers.put(name, readString(in));
        }
        return headers;
    }

    private static int readInt(ByteBuf in) {
        if (in.readableBytes() < 4) {
            throw INCOMPLETE;
        }
        return in.readInt();
    }

    private String readString(ByteBuf in) {
        return new String(readBytes(in, readInt(in)), StandardCharsets.UTF_8);
    }

    private byte[] readBytes(ByteBuf in, int length) {
        if (length < 0 || length > maxBufferSize) {
            throw new CorruptedFrameException("Invalid message size: " + length);
        }
        if (in.readableBytes() < length) {
            throw INCOMPLETE;
        }
        byte[] bytes = new byte[length];
        in.readBytes(bytes);
        return bytes;
    }

    /** A frame that has not fully arrived yet (no stack trace: it is not an error). */
    private static final class IncompleteFrame extends RuntimeException {
        private static final long serialVersionUID = 1L;

        IncompleteFrame() {
            super(null, null, false, false);
        }
    }
}
