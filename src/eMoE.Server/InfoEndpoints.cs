using System.Text.Json;

namespace eMoE.Server;

/// <summary><c>GET /health</c> (llama.cpp's answers) and <c>GET /v1/models</c>.</summary>
internal sealed class InfoEndpoints(ModelHost host)
{
    /// <summary>200 <c>{"status":"ok"}</c> when serving; 503 with llama.cpp's error body while loading (or failed, or shutting down).</summary>
    public async Task HealthAsync(HttpContext context)
    {
        try
        {
            host.RequireReady();
        }
        catch (ApiException e)
        {
            context.Response.StatusCode = 503;
            context.Response.ContentType = "application/json";
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer, Json.Writer))
            {
                json.WriteStartObject();
                json.WriteStartObject("error");
                json.WriteNumber("code", 503);
                json.WriteString("message", e.Message);
                json.WriteString("type", "unavailable_error");
                json.WriteEndObject();
                json.WriteEndObject();
            }
            await context.Response.Body.WriteAsync(buffer.ToArray(), context.RequestAborted).ConfigureAwait(false);
            return;
        }
        context.Response.ContentType = "application/json";
        await context.Response.Body.WriteAsync("{\"status\":\"ok\"}"u8.ToArray(), context.RequestAborted).ConfigureAwait(false);
    }

    public Task ModelsAsync(HttpContext context)
    {
        var model = host.RequireReady();
        return WriteJsonAsync(context, json =>
        {
            json.WriteStartObject();
            json.WriteString("object", "list");
            json.WriteStartArray("data");
            WriteModel(json, model.ContextLength);
            json.WriteEndArray();
            json.WriteEndObject();
        });
    }

    public Task ModelAsync(HttpContext context, string id)
    {
        var model = host.RequireReady();
        if (!string.Equals(id, host.ServedName, StringComparison.Ordinal))
            throw new ApiException(404, $"The model '{id}' does not exist; this server serves '{host.ServedName}'", "model", "model_not_found");
        return WriteJsonAsync(context, json => WriteModel(json, model.ContextLength));
    }

    private void WriteModel(Utf8JsonWriter json, int context)
    {
        json.WriteStartObject();
        json.WriteString("id", host.ServedName);
        json.WriteString("object", "model");
        json.WriteNumber("created", host.CreatedAt.ToUnixTimeSeconds());
        json.WriteString("owned_by", "emoe");
        json.WriteNumber("max_model_len", context);
        json.WriteEndObject();
    }

    private static async Task WriteJsonAsync(HttpContext context, Action<Utf8JsonWriter> write)
    {
        context.Response.ContentType = "application/json";
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, Json.Writer)) write(json);
        await context.Response.Body.WriteAsync(buffer.ToArray(), context.RequestAborted).ConfigureAwait(false);
    }
}
