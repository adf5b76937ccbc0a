using System.Text.Json;

namespace eMoE.Server;

/// <summary>
/// An error answered in OpenAI's shape, <c>{"error": {"message", "type", "param", "code"}}</c>, with its
/// HTTP status. Thrown anywhere in a request; <see cref="ErrorHandling"/> writes it.
/// </summary>
internal sealed class ApiException(int status, string message, string? param = null, string? code = null, string? type = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;
    public string Type { get; } = type ?? ApiError.TypeFor(status);
    /// <summary>Extra headers (Retry-After, WWW-Authenticate).</summary>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }

    public static ApiException BadRequest(string message, string? param, string? code = null) => new(400, message, param, code);
}

/// <summary>Writes OpenAI-shaped error bodies.</summary>
internal static class ApiError
{
    public static string TypeFor(int status) => status switch
    {
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "unavailable_error",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    /// <summary>The error object (without the outer <c>{"error": ...}</c>).</summary>
    public static void WriteObject(Utf8JsonWriter json, string message, string type, string? param, string? code, int? numericCode = null)
    {
        json.WriteStartObject();
        json.WriteString("message", message);
        json.WriteString("type", type);
        if (param is null) json.WriteNull("param");
        else json.WriteString("param", param);
        if (code is not null) json.WriteString("code", code);
        else if (numericCode is int n) json.WriteNumber("code", n);
        else json.WriteNull("code");
        json.WriteEndObject();
    }

    public static byte[] Body(ApiException e) => Body(e.Message, e.Type, e.Param, e.Code, e.Status == 503 ? 503 : null);

    public static byte[] Body(string message, string type, string? param, string? code, int? numericCode = null)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, Json.Writer))
        {
            json.WriteStartObject();
            json.WritePropertyName("error");
            WriteObject(json, message, type, param, code, numericCode);
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>Answers <paramref name="e"/> (the response must not have started).</summary>
    public static async Task WriteAsync(HttpContext context, ApiException e)
    {
        var response = context.Response;
        response.StatusCode = e.Status;
        response.ContentType = "application/json";
        foreach (var (name, value) in e.Headers ?? new Dictionary<string, string>()) response.Headers[name] = value;
        // The unread rest of a too-large body cannot be skipped: the connection closes, and the client must know not to reuse it.
        if (e.Status == 413) response.Headers.Connection = "close";
        await response.Body.WriteAsync(Body(e), context.RequestAborted).ConfigureAwait(false);
    }
}
