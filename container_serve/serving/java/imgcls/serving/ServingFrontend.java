package imgcls.serving;

import com.amazonaws.ml.mms.ModelServer;
import com.amazonaws.ml.mms.servingsdk.impl.PluginsManager;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import io.netty.channel.ChannelFuture;
import io.netty.util.internal.logging.InternalLoggerFactory;
import io.netty.util.internal.logging.Slf4JLoggerFactory;
import java.io.IOException;
import java.security.GeneralSecurityException;
import java.util.List;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.DefaultParser;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * multi-model-server's frontend with the two things its configuration cannot express.
 *
 * <p>1. Server-side batching for the model given on the command line: multi-model-server
 * 1.1 registers such a model with a batch size of 1 whatever its configuration says, and
 * only its management API can register one with another batch size (which `/invocations`
 * then no longer routes to). The batch size and delay are read by the model's workers at
 * every poll, so setting them right after start-up is enough.
 *
 * <p>2. A {@link RequestGuard} in front of every connection's HTTP handler, and on a multi-model
 * endpoint the limit on models held ({@link ModelRegistrations}) and the drain of a model's
 * requests before it is unloaded ({@link ModelDrain}); see there.
 *
 * <p>Everything else is multi-model-server's own `main`, started the same way. `serve`
 * passes the settings as system properties (see {@link Settings}).
 */
public final class ServingFrontend extends ModelServer {

    private static final Logger LOG = LoggerFactory.getLogger(ServingFrontend.class);

    private final Settings settings;
    /** The models' requests in flight, across connections and both server channels. */
    private final ModelTraffic traffic = new ModelTraffic();

    private ServingFrontend(ConfigManager configManager, Settings settings) {
        super(configManager);
        this.settings = settings;
    }

    /** multi-model-server's own start-up sequence, with this class as the server. */
    public static void main(String[] args) {
        try {
            CommandLine command =
                    new DefaultParser()
                            .parse(ConfigManager.Arguments.getOptions(), args, null, false);
            ConfigManager.init(new ConfigManager.Arguments(command));
            PluginsManager.getInstance().initialize();
            InternalLoggerFactory.setDefaultFactory(Slf4JLoggerFactory.INSTANCE);
            new ServingFrontend(ConfigManager.getInstance(), Settings.fromSystemProperties())
                    .startAndWait();
        } catch (Throwable t) { // NOPMD - the process ends here either way; say why
            t.printStackTrace(); // NOPMD
        } finally {
            System.exit(1); // NOPMD - as multi-model-server's main: it only returns on failure
        }
    }

    @Override
    public List<ChannelFuture> start()
            throws InterruptedException, IOException, GeneralSecurityException {
        List<ChannelFuture> closeFutures = super.start();
        // Each future belongs to a bound server channel (the inference port, the management
        // socket). Connections accepted in the instant between the bind and this line miss the
        // guard: the server is not reported up before start() returns.
        for (ChannelFuture closeFuture : closeFutures) {
            closeFuture.channel().pipeline().addFirst(new GuardInstaller(settings, traffic));
        }
        applyBatching();
        return closeFutures;
    }

    private void applyBatching() {
        ModelManager manager = ModelManager.getInstance();
        for (String name : manager.getStartupModels()) {
            Model model = manager.getModels().get(name);
            if (model == null) {
                continue;
            }
            model.setBatchSize(settings.batchSize);
            model.setMaxBatchDelay(settings.maxBatchDelayMs);
            LOG.info(
                    "Model {}: batch size {}, max batch delay {} ms",
                    name,
                    settings.batchSize,
                    settings.maxBatchDelayMs);
        }
    }
}
