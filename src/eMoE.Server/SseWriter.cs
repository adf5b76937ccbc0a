using System.Buffers;
using System.Text.Json;
using Microsoft.AspNetCore.Http.Features;

namespace eMoE.Server;

/// <summary>
/// Server-Sent Events as OpenAI streams them: each event <c>data: {json}\n\n</c>, flushed at once,
/// and <c>data: [DONE]\n\n</c> at the end.
/// </summary>
internal sealed class SseWriter(HttpResponse response)
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        response.StatusCode = 200;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no";
        response.HttpContext.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        await response.StartAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task WriteAsync(Action<Utf8JsonWriter> write, CancellationToken cancellationToken)
    {
        var pipe = response.BodyWriter;
        pipe.Write("data: "u8);
        using (var json = new Utf8JsonWriter(pipe, Json.Writer)) write(json);
        pipe.Write("\n\n"u8);
        await pipe.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task DoneAsync(CancellationToken cancellationToken)
    {
        response.BodyWriter.Write("data: [DONE]\n\n"u8);
        await response.BodyWriter.FlushAsync(cancellationToken).ConfigureAwait(false);
    }
}
