package imgcls.serving;

import com.amazonaws.ml.mms.http.messages.RegisterModelRequest;
import com.amazonaws.ml.mms.util.JsonUtils;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.google.gson.JsonParseException;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponse;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Removes what a failed model registration leaves behind, before the next one.
 *
 * <p>When a model's worker fails to load (507 when the endpoint is full, see serving/state.py),
 * multi-model-server answers the POST /models with the failure and rolls the registration back,
 * but its rollback can leave the model registered with no worker. The platform's retry, once it
 * has unloaded another model, would then get 409 ("already registered"), and every request for
 * the model 503. So this handler notes each registration that fails, and before the next POST
 * /models removes those still registered without a worker.
 *
 * <p>It sits after multi-model-server's aggregator (it reads whole requests) and sees the
 * responses the HTTP handler after it writes.
 */
final class RegistrationRepair extends ChannelDuplexHandler {

    private static final Logger LOG = LoggerFactory.getLogger(RegistrationRepair.class);
    /** Models whose registration failed, on any connection. */
    private static final Set<String> FAILED = ConcurrentHashMap.newKeySet();

    /** The model this connection's POST /models in progress registers, if any. */
    private String registering;

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) throws Exception {
        if (msg instanceof FullHttpRequest) {
            FullHttpRequest request = (FullHttpRequest) msg;
            QueryStringDecoder decoder = new QueryStringDecoder(request.uri());
            if (HttpMethod.POST.equals(request.method()) && "/models".equals(decoder.path())) {
                removeFailedRegistrations();
                registering = modelName(request, decoder);
            }
        }
        super.channelRead(ctx, msg);
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise)
            throws Exception {
        if (msg instanceof HttpResponse && registering != null) {
            if (((HttpResponse) msg).status().code() >= 500) {
                FAILED.add(registering);
            }
            registering = null;
        }
        super.write(ctx, msg, promise);
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
