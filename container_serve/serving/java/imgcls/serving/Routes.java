package imgcls.serving;

import com.amazonaws.ml.mms.wlm.ModelManager;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.util.List;
import java.util.Set;

/** Which model a request invokes, by multi-model-server 1.1's own routing rules. */
final class Routes {

    /** An invocation whose model multi-model-server can't tell (it answers it itself). */
    static final String UNNAMED = "";

    private Routes() {}

    /**
     * The model the request's route runs on a worker: `/models/NAME/invoke`, `/predictions/NAME`,
     * `/NAME/predict`, or `/invocations` (its `model_name` parameter, else the one model served
     * from the start); {@link #UNNAMED} for such a route without a model, null for any other route.
     */
    static String invokedModel(QueryStringDecoder decoder) {
        String[] segments = decoder.path().split("/");
        if (segments.length < 2) {
            return null;
        }
        String first = segments[1];
        if ("invocations".equals(first) && segments.length == 2) {
            List<String> named = decoder.parameters().get("model_name");
            if (named != null && !named.isEmpty() && !named.get(0).isEmpty()) {
                return named.get(0);
            }
            Set<String> startup = ModelManager.getInstance().getStartupModels();
            return startup.size() == 1 ? startup.iterator().next() : UNNAMED;
        }
        if ("models".equals(first) && segments.length == 4 && "invoke".equals(segments[3])) {
            return segments[2];
        }
        if ("predictions".equals(first)) {
            return segments.length >= 3 ? segments[2] : UNNAMED;
        }
        if (segments.length == 3 && "predict".equals(segments[2])) {
            return first;
        }
        return null;
    }

    /** The model `DELETE /models/NAME` unloads, or null for any other request. */
    static String unloadedModel(String method, QueryStringDecoder decoder) {
        String[] segments = decoder.path().split("/");
        boolean unload =
                "DELETE".equals(method) && segments.length == 3 && "models".equals(segments[1]);
        return unload ? segments[2] : null;
    }
}
