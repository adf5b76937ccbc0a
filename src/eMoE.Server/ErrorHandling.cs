using KestrelBadRequest = Microsoft.AspNetCore.Http.BadHttpRequestException;

namespace eMoE.Server;

/// <summary>
/// Every error leaves the server OpenAI-shaped: thrown <see cref="ApiException"/>s, Kestrel's bad
/// requests (413 body too large, malformed requests), unexpected failures (500), and the empty
/// answers of routing (404 unknown path, 405 wrong method).
/// </summary>
internal static class ErrorHandling
{
    public static void UseOpenAiErrors(this WebApplication app, ILogger logger)
    {
        app.Use(async (context, next) =>
        {
            try
            {
                await next(context).ConfigureAwait(false);
            }
            catch (Exception e) when (!context.Response.HasStarted && !context.RequestAborted.IsCancellationRequested)
            {
                var error = ToApiException(e);
                if (error.Status >= 500) logger.LogError(e, "{Method} {Path} failed", context.Request.Method, context.Request.Path);
                context.Response.Clear();
                await ApiError.WriteAsync(context, error).ConfigureAwait(false);
            }
        });
        app.UseStatusCodePages(async status =>
        {
            var context = status.HttpContext;
            int code = context.Response.StatusCode;
            var request = context.Request;
            var error = code switch
            {
                404 => new ApiException(404, $"Not found: {request.Method} {request.Path}", code: "not_found"),
                405 => new ApiException(405, $"Method {request.Method} is not allowed for {request.Path}", code: "method_not_allowed"),
                413 => new ApiException(413, "The request body is too large", code: "request_too_large"),
                _ => new ApiException(code, $"HTTP {code}"),
            };
            context.Response.ContentType = "application/json";
            await context.Response.Body.WriteAsync(ApiError.Body(error), context.RequestAborted).ConfigureAwait(false);
        });
    }

    public static ApiException ToApiException(Exception e) => e switch
    {
        ApiException api => api,
        KestrelBadRequest { StatusCode: 413 } => new ApiException(413, "The request body is too large", code: "request_too_large"),
        KestrelBadRequest bad => new ApiException(bad.StatusCode, $"Bad request: {bad.Message}"),
        ObjectDisposedException => new ApiException(503, "The server is shutting down"),
        _ => new ApiException(500, $"Internal error: {e.GetType().Name}: {e.Message}"),
    };
}
