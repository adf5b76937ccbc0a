using System.Security.Cryptography;
using System.Text;

namespace eMoE.Server;

/// <summary>
/// The API key of /v1 endpoints: <c>Authorization: Bearer KEY</c>. Compared in constant time
/// (<see cref="CryptographicOperations.FixedTimeEquals"/> over SHA-256 digests, so neither the
/// content nor the length of the key leaks through timing).
/// </summary>
internal sealed class ApiKeyCheck(string key)
{
    private readonly byte[] _digest = SHA256.HashData(Encoding.UTF8.GetBytes(key));

    public bool Allows(HttpRequest request)
    {
        string? header = request.Headers.Authorization;
        const string scheme = "Bearer ";
        string given = header is not null && header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase) ? header[scheme.Length..].Trim() : "";
        return CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), _digest);
    }

    public static ApiException Unauthorized(HttpRequest request) => new(401,
        request.Headers.Authorization.Count == 0
            ? "Missing API key: send it as 'Authorization: Bearer KEY'"
            : "Incorrect API key provided",
        code: "invalid_api_key")
    {
        Headers = new Dictionary<string, string> { ["WWW-Authenticate"] = "Bearer" },
    };
}
