package imgcls.serving;

import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.LastHttpContent;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.handler.codec.http.multipart.HttpPostRequestDecoder;
import io.netty.util.ReferenceCountUtil;

/**
 * Answers three kinds of request before multi-model-server reads their body.
 *
 * <ul>
 *   <li>A body over the payload limit (by its Content-Length): 413 with a JSON reason. The
 *       rest of the body is read and dropped before the connection closes, so that a client
 *       that sends its whole body before reading (Python's http.client, urllib) gets the
 *       answer instead of a reset connection (multi-model-server's own refusal closes at
 *       once, with SO_LINGER 0).
 *   <li>A form or multipart body sent for inference: 415 with a JSON reason. Left alone,
 *       multi-model-server decodes such a body as form fields before any handler runs, and
 *       answers bytes that are no valid form (any JPEG) with a 500 that quotes the body.
 *       curl -d and urllib send this type when the client names none.
 *   <li>GET /execution-parameters (Batch Transform): the answer `serve` gives.
 * </ul>
 *
 * Everything else passes through untouched.
 */
final class RequestGuard extends ChannelInboundHandlerAdapter {

    private static final String FORM = "application/x-www-form-urlencoded";

    private final Settings settings;
    /** After an answer of ours: drop the request's body, then close (or carry on). */
    private boolean dropping;

    private boolean closeAfterBody;

    RequestGuard(Settings settings) {
        this.settings = settings;
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (dropping) {
            boolean last = msg instanceof LastHttpContent;
            ReferenceCountUtil.release(msg);
            if (last) {
                finishDropping(ctx);
            }
            return;
        }
        if (msg instanceof HttpRequest && answer(ctx, (HttpRequest) msg)) {
            if (msg instanceof LastHttpContent) { // a request that carries its whole body
                ReferenceCountUtil.release(msg);
                finishDropping(ctx);
            }
            return;
        }
        ctx.fireChannelRead(msg);
    }

    /** Answers the request if it is one of ours; returns whether it did. */
    private boolean answer(ChannelHandlerContext ctx, HttpRequest request) {
        if (!request.decoderResult().isSuccess()) {
            return false; // multi-model-server answers malformed requests itself
        }
        QueryStringDecoder decoder = new QueryStringDecoder(request.uri());
        String path = decoder.path();
        if (HttpMethod.GET.equals(request.method()) && "/execution-parameters".equals(path)) {
            respond(ctx, request, HttpResponseStatus.OK, settings.executionParameters);
        } else if (HttpUtil.getContentLength(request, -1L) > settings.maxRequestBytes) {
            respond(ctx, request, HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE, settings.tooLargeBody);
        } else if (isForm(request) && Routes.invokedModel(decoder) != null) {
            respond(ctx, request, HttpResponseStatus.UNSUPPORTED_MEDIA_TYPE, settings.formBody);
        } else {
            return false;
        }
        return true;
    }

    private static boolean isForm(HttpRequest request) {
        CharSequence mime = HttpUtil.getMimeType(request);
        return HttpPostRequestDecoder.isMultipart(request)
                || (mime != null && FORM.contentEquals(mime.toString().toLowerCase()));
    }

    private void respond(
            ChannelHandlerContext ctx, HttpRequest request, HttpResponseStatus status, String json) {
        dropping = true;
        closeAfterBody = status.code() >= 400 || !HttpUtil.isKeepAlive(request);
        if (HttpUtil.is100ContinueExpected(request)) {
            // The client waits for "100 Continue" before it sends the body: it sends none now.
            ctx.writeAndFlush(Answers.json(ctx, request, status, json, true))
                    .addListener(ChannelFutureListener.CLOSE);
        } else {
            ctx.writeAndFlush(Answers.json(ctx, request, status, json, closeAfterBody));
        }
    }

    private void finishDropping(ChannelHandlerContext ctx) {
        dropping = false;
        if (closeAfterBody) {
            ctx.close();
        }
    }
}
