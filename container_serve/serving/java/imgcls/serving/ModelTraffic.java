package imgcls.serving;

import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * Per model, shared by every connection: how many of its invocations are in flight (handed to
 * multi-model-server and not yet answered), and whether it is being loaded or unloaded.
 *
 * <p>One lock guards it all: each step changes a field or two, and admitting an invocation and
 * starting an unload must not interleave (an invocation admitted after an unload has counted
 * the requests in flight would reach a model whose workers are being stopped).
 */
final class ModelTraffic {

    /** What becomes of an invocation. */
    enum Admission {
        ADMITTED,
        LOADING,
        UNLOADING
    }

    private static final class State {
        int inFlight;
        boolean loading;
        /** Set while the model is being unloaded; complete once nothing is in flight. */
        CompletableFuture<Void> drained;

        boolean idle() {
            return inFlight == 0 && !loading && drained == null;
        }
    }

    private final Map<String, State> models = new HashMap<>();

    /** Counts an invocation of `model` in flight, unless the model is coming or going. */
    synchronized Admission enter(String model) {
        State state = models.get(model);
        if (state != null && state.drained != null) {
            return Admission.UNLOADING;
        }
        if (state != null && state.loading) {
            return Admission.LOADING;
        }
        models.computeIfAbsent(model, name -> new State()).inFlight++;
        return Admission.ADMITTED;
    }

    /** An invocation of `model` was answered (or its client went away). */
    synchronized void leave(String model) {
        State state = models.get(model);
        if (state == null || state.inFlight == 0) {
            return;
        }
        state.inFlight--;
        if (state.inFlight == 0 && state.drained != null) {
            state.drained.complete(null);
        }
        forgetIfIdle(model, state);
    }

    /**
     * From now on invocations of `model` are refused; the future completes once none is in
     * flight (at once if none is).
     */
    synchronized CompletableFuture<Void> startUnloading(String model) {
        State state = models.computeIfAbsent(model, name -> new State());
        if (state.drained == null) {
            state.drained = new CompletableFuture<>();
        }
        if (state.inFlight == 0) {
            state.drained.complete(null);
        }
        return state.drained;
    }

    /** multi-model-server has unloaded `model` (or found none): it answers what comes next. */
    synchronized void unloaded(String model) {
        State state = models.get(model);
        if (state != null) {
            state.drained = null;
            forgetIfIdle(model, state);
        }
    }

    /** From now on until {@link #loaded}, invocations of `model` are refused. */
    synchronized void startLoading(String model) {
        models.computeIfAbsent(model, name -> new State()).loading = true;
    }

    synchronized void loaded(String model) {
        State state = models.get(model);
        if (state != null) {
            state.loading = false;
            forgetIfIdle(model, state);
        }
    }

    /** Names clients make up (invocations of models never loaded) leave nothing behind. */
    private void forgetIfIdle(String model, State state) {
        if (state.idle()) {
            models.remove(model);
        }
    }
}
