package imgcls.serving;

import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponse;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpStatusClass;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.ReferenceCountUtil;
import io.netty.util.concurrent.ScheduledFuture;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Unloading a model that is in use: `DELETE /models/NAME` waits until the model's invocations in
 * flight are answered (at most the response timeout), and meanwhile its new invocations are
 * refused with a JSON 503 and Retry-After, as are those of a model being loaded.
 *
 * <p>Why: multi-model-server unloads at once. It stops the model's workers in the middle of a
 * batch (the batch's requests answer 500, "Worker scaled down" or "Worker died") and puts the
 * jobs it took back in the queue of a model that no worker reads any more, after a race in its
 * BatchAggregator ("Unexpected job"): those clients never get an answer and their connections
 * are dropped. A request that finds a model registered but not yet loaded waits in the same
 * queue, which a failed load leaves behind.
 *
 * <p>It sits after multi-model-server's aggregator (it reads whole requests), before its HTTP
 * handler (it sees that handler's responses, in the order of the connection's requests). An
 * invocation counts as in flight from the moment it is handed on until its response is written
 * or its connection closes.
 */
final class ModelDrain extends ChannelDuplexHandler {

    private static final Logger LOG = LoggerFactory.getLogger(ModelDrain.class);
    /** In the queue of requests handed on: one that is no invocation of a named model. */
    private static final String NOT_COUNTED = "";

    private final Settings settings;
    private final ModelTraffic traffic;
    /** The requests handed on and not yet answered, oldest first: the model each invokes. */
    private final Deque<String> handedOn = new ArrayDeque<>();

    ModelDrain(Settings settings, ModelTraffic traffic) {
        this.settings = settings;
        this.traffic = traffic;
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) throws Exception {
        if (!(msg instanceof FullHttpRequest)) {
            super.channelRead(ctx, msg);
            return;
        }
        FullHttpRequest request = (FullHttpRequest) msg;
        QueryStringDecoder decoder = new QueryStringDecoder(request.uri());
        String unloaded = Routes.unloadedModel(request.method().name(), decoder);
        if (unloaded != null) {
            unloadOnceDrained(ctx, request, unloaded);
            return;
        }
        String model = Routes.invokedModel(decoder);
        if (model == null || Routes.UNNAMED.equals(model)) {
            handOn(ctx, request, NOT_COUNTED);
            return;
        }
        ModelTraffic.Admission admission = traffic.enter(model);
        if (admission == ModelTraffic.Admission.ADMITTED) {
            handOn(ctx, request, model);
        } else {
            refuse(ctx, request, admission);
        }
    }

    private void handOn(ChannelHandlerContext ctx, FullHttpRequest request, String counted) {
        handedOn.addLast(counted);
        ctx.fireChannelRead(request);
    }

    private void refuse(
            ChannelHandlerContext ctx, FullHttpRequest request, ModelTraffic.Admission admission) {
        String body =
                admission == ModelTraffic.Admission.LOADING
                        ? settings.modelLoadingBody
                        : settings.modelUnloadingBody;
        boolean close = !HttpUtil.isKeepAlive(request);
        FullHttpResponse response =
                Answers.json(ctx, request, HttpResponseStatus.SERVICE_UNAVAILABLE, body, close);
        response.headers().set(HttpHeaderNames.RETRY_AFTER, settings.retryAfterSeconds);
        ReferenceCountUtil.release(request);
        if (close) {
            ctx.writeAndFlush(response).addListener(ChannelFutureListener.CLOSE);
        } else {
            ctx.writeAndFlush(response);
        }
    }

    /**
     * Hands the DELETE on once the model has no invocation in flight, or after the response
     * timeout (a request still running then would fail on its own). The connection reads nothing
     * more until then, so that its next request can't overtake the DELETE.
     */
    private void unloadOnceDrained(
            ChannelHandlerContext ctx, FullHttpRequest request, String model) {
        ctx.channel().config().setAutoRead(false);
        CompletableFuture<Void> drained = traffic.startUnloading(model);
        AtomicBoolean handed = new AtomicBoolean();
        Runnable unload =
                () -> {
                    if (!handed.compareAndSet(false, true)) {
                        return;
                    }
                    if (!drained.isDone()) {
                        LOG.warn(
                                "Unloading model {} with requests still in flight after {} s",
                                model,
                                settings.drainTimeoutSeconds);
                    }
                    try {
                        // multi-model-server unregisters the model and stops its workers
                        // within this call; from then on it answers the model's requests 404.
                        handOn(ctx, request, NOT_COUNTED);
                    } finally {
                        traffic.unloaded(model);
                        ctx.channel().config().setAutoRead(true);
                    }
                };
        ScheduledFuture<?> deadline =
                ctx.executor().schedule(unload, settings.drainTimeoutSeconds, TimeUnit.SECONDS);
        drained.thenRun(
                () -> {
                    deadline.cancel(false);
                    ctx.executor().execute(unload); // on this connection's event loop
                });
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise)
            throws Exception {
        if (msg instanceof HttpResponse && !isInformational((HttpResponse) msg)) {
            answered(handedOn.pollFirst());
        }
        super.write(ctx, msg, promise);
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) throws Exception {
        // Answers to a closed connection may never be written: its requests count no longer.
        while (!handedOn.isEmpty()) {
            answered(handedOn.pollFirst());
        }
        super.channelInactive(ctx);
    }

    private void answered(String model) {
        if (model != null && !NOT_COUNTED.equals(model)) {
            traffic.leave(model);
        }
    }

    private static boolean isInformational(HttpResponse response) {
        return response.status().codeClass() == HttpStatusClass.INFORMATIONAL;
    }
}
