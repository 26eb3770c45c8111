package imgcls.serving;

import com.amazonaws.ml.mms.http.Session;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpVersion;
import java.nio.charset.StandardCharsets;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** The JSON answers this extension gives itself, logged like multi-model-server's own. */
final class Answers {

    private static final Logger ACCESS_LOG = LoggerFactory.getLogger("ACCESS_LOG");

    private Answers() {}

    /** A JSON response to `request`, with an access-log line as for every other request. */
    static FullHttpResponse json(
            ChannelHandlerContext ctx,
            HttpRequest request,
            HttpResponseStatus status,
            String body,
            boolean close) {
        Session session = new Session(String.valueOf(ctx.channel().remoteAddress()), request);
        session.setCode(status.code());
        FullHttpResponse response =
                new DefaultFullHttpResponse(
                        HttpVersion.HTTP_1_1,
                        status,
                        Unpooled.copiedBuffer(body, StandardCharsets.UTF_8));
        response.headers()
                .set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.APPLICATION_JSON)
                .set(HttpHeaderNames.CONTENT_LENGTH, response.content().readableBytes())
                .set("x-request-id", session.getRequestId());
        if (close) {
            response.headers().set(HttpHeaderNames.CONNECTION, HttpHeaderValues.CLOSE);
        }
        ACCESS_LOG.info(session.toString());
        return response;
    }
}
