package imgcls.serving;

import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelPipeline;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Sits on a server channel and gives every accepted connection a {@link RequestGuard}, a
 * {@link ModelRegistrations} and a {@link ModelDrain}.
 *
 * <p>They belong just before and after multi-model-server's "aggregator", which its own
 * initializer adds when the connection registers. So this handler adds a placeholder before
 * the connection is registered, and the placeholder moves the guard into place when the
 * connection becomes active: after every initializer has run, before the first read.
 */
final class GuardInstaller extends ChannelInboundHandlerAdapter {

    private final Settings settings;
    private final ModelTraffic traffic;

    GuardInstaller(Settings settings, ModelTraffic traffic) {
        this.settings = settings;
        this.traffic = traffic;
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (msg instanceof Channel) {
            ((Channel) msg).pipeline().addLast(new Placeholder(settings, traffic));
        }
        ctx.fireChannelRead(msg);
    }

    /** Puts them around the aggregator once the connection's pipeline is built. */
    static final class Placeholder extends ChannelInboundHandlerAdapter {

        private static final Logger LOG = LoggerFactory.getLogger(Placeholder.class);
        private static final String AGGREGATOR = "aggregator"; // multi-model-server's name

        private final Settings settings;
        private final ModelTraffic traffic;

        Placeholder(Settings settings, ModelTraffic traffic) {
            this.settings = settings;
            this.traffic = traffic;
        }

        @Override
        public void channelActive(ChannelHandlerContext ctx) throws Exception {
            ChannelPipeline pipeline = ctx.pipeline();
            if (pipeline.get(AGGREGATOR) == null) {
                LOG.error("No {} in the connection's pipeline: requests are not guarded", AGGREGATOR);
            } else {
                pipeline.addBefore(AGGREGATOR, "serving-guard", new RequestGuard(settings));
                // In this order after the aggregator: the drain sees every request that
                // multi-model-server's handler gets, and every answer it writes.
                pipeline.addAfter(AGGREGATOR, "serving-drain", new ModelDrain(settings, traffic));
                pipeline.addAfter(
                        AGGREGATOR, "serving-registrations", new ModelRegistrations(settings, traffic));
            }
            pipeline.remove(this);
            super.channelActive(ctx);
        }
    }
}
