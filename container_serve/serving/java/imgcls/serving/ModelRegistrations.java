package imgcls.serving;

import com.amazonaws.ml.mms.http.messages.RegisterModelRequest;
import com.amazonaws.ml.mms.util.JsonUtils;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.google.gson.JsonParseException;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponse;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.ReferenceCountUtil;
import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * POST /models on a multi-model endpoint: a limit on the models held at once, and the repair
 * of failed registrations.
 *
 * <p>The limit: once the endpoint holds its most models, a registration answers 507, as
 * SageMaker's multi-model contract asks (the platform then unloads the least recently used
 * model and tries again). Checked here, before multi-model-server starts a process for the
 * model, and under one lock with the registration itself, so that concurrent requests can't
 * both take the last place.
 *
 * <p>The repair: when a model's worker fails to load, multi-model-server answers the POST with
 * the failure and rolls the registration back, but its rollback can leave the model registered
 * with no worker; the platform's retry would then get 409 ("already registered") and every
 * request for the model 503. So each failed registration is noted, and before the next POST
 * /models those still registered without a worker are removed.
 *
 * <p>A model is marked as loading in {@link ModelTraffic} from its POST until the answer: its
 * invocations meanwhile are refused (see {@link ModelDrain}) instead of waiting in a queue that a
 * failed load leaves behind.
 *
 * <p>It sits after multi-model-server's aggregator (it reads whole requests), before its HTTP
 * handler (it sees the responses that handler writes).
 */
final class ModelRegistrations extends ChannelDuplexHandler {

    private static final Logger LOG = LoggerFactory.getLogger(ModelRegistrations.class);
    /** Models whose registration failed, on any connection. */
    private static final Set<String> FAILED = ConcurrentHashMap.newKeySet();
    /** Counting the models and registering one more is one step. */
    private static final Object REGISTERING = new Object();

    private final Settings settings;
    private final ModelTraffic traffic;
    /** The model this connection's POST /models in progress registers, if any. */
    private String registering;
    /** The same model if it was not registered before: it is loading until the answer. */
    private String loading;

    ModelRegistrations(Settings settings, ModelTraffic traffic) {
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
        if (!HttpMethod.POST.equals(request.method()) || !"/models".equals(decoder.path())) {
            super.channelRead(ctx, msg);
            return;
        }
        synchronized (REGISTERING) {
            removeFailedRegistrations();
            String name = modelName(request, decoder);
            if (isFull() && !isRegistered(name)) {
                ReferenceCountUtil.release(msg);
                ctx.writeAndFlush(
                                Answers.json(
                                        ctx,
                                        request,
                                        HttpResponseStatus.INSUFFICIENT_STORAGE,
                                        settings.modelLimitBody,
                                        true))
                        .addListener(ChannelFutureListener.CLOSE);
                return;
            }
            registering = name; // a model already there gets multi-model-server's 409
            if (name != null && !isRegistered(name)) {
                loading = name;
                traffic.startLoading(name);
            }
            // multi-model-server registers the model within this call (its workers start later).
            super.channelRead(ctx, msg);
        }
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise)
            throws Exception {
        if (msg instanceof HttpResponse && registering != null) {
            if (((HttpResponse) msg).status().code() >= 500) {
                FAILED.add(registering);
            }
            registering = null;
            if (loading != null) {
                traffic.loaded(loading);
                loading = null;
            }
        }
        super.write(ctx, msg, promise);
    }

    private static boolean isRegistered(String name) {
        return name != null && ModelManager.getInstance().getModels().containsKey(name);
    }

    private boolean isFull() {
        return settings.maxModels > 0
                && ModelManager.getInstance().getModels().size() >= settings.maxModels;
    }

    private static void removeFailedRegistrations() {
        ModelManager manager = ModelManager.getInstance();
        for (String name : FAILED) {
            FAILED.remove(name);
            Model model = manager.getModels().get(name);
            if (model != null && model.getMaxWorkers() == 0) {
                LOG.info("Removing model {}: its registration failed", name);
                manager.unregisterModel(name);
            }
        }
    }

    /** The name as multi-model-server reads it: from a JSON body, else from the query. */
    private static String modelName(FullHttpRequest request, QueryStringDecoder decoder) {
        CharSequence mime = HttpUtil.getMimeType(request);
        if (mime == null || !HttpHeaderValues.APPLICATION_JSON.contentEqualsIgnoreCase(mime)) {
            return new RegisterModelRequest(decoder).getModelName();
        }
        try {
            String body = request.content().toString(StandardCharsets.UTF_8);
            RegisterModelRequest parsed = JsonUtils.GSON.fromJson(body, RegisterModelRequest.class);
            return parsed == null ? null : parsed.getModelName();
        } catch (JsonParseException e) {
            return null; // multi-model-server answers the malformed body itself
        }
    }
}
