using System.Text.Json;
using System.Text.Unicode;

namespace eMoE.Server;

/// <summary>Reads a request's JSON body: within the size limit (413), valid UTF-8 and valid JSON (400), an object.</summary>
internal static class RequestBody
{
    public static async Task<JsonDocument> ReadObjectAsync(HttpRequest request, long limit, CancellationToken cancellationToken)
    {
        if (request.ContentLength > limit)
            throw new ApiException(413, $"The request body is {request.ContentLength} bytes; the limit is {limit}", code: "request_too_large");
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
        if (buffer.Length > limit) throw new ApiException(413, $"The request body is above the limit of {limit} bytes", code: "request_too_large");
        var bytes = buffer.GetBuffer().AsMemory(0, (int)buffer.Length);
        if (bytes.Length == 0) throw ApiException.BadRequest("The request body is empty; expected a JSON object", null, "invalid_json");
        if (!Utf8.IsValid(bytes.Span))
        {
            int at = FirstInvalidByte(bytes.Span);
            throw ApiException.BadRequest($"The request body is not valid UTF-8 (byte {at})", null, "invalid_utf8");
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw ApiException.BadRequest($"The request body is not valid JSON: {e.Message}", null, "invalid_json");
        }
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = document.RootElement.ValueKind;
            document.Dispose();
            throw ApiException.BadRequest($"The request body must be a JSON object, not {JsonFields.Describe(kind)}", null, "invalid_json");
        }
        return document;
    }

    private static int FirstInvalidByte(ReadOnlySpan<byte> bytes)
    {
        // Utf8.IsValid says whether; this finds where: decode until the first replacement.
        var status = Utf8.ToUtf16(bytes, new char[bytes.Length], out int read, out _, replaceInvalidSequences: false);
        return status == System.Buffers.OperationStatus.Done ? bytes.Length : read;
    }
}
