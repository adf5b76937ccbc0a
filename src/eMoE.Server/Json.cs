using System.Text.Encodings.Web;
using System.Text.Json;

namespace eMoE.Server;

/// <summary>How answers are written: text as it is (no \u0027 for quotes), as OpenAI and vLLM write it.</summary>
internal static class Json
{
    public static readonly JsonWriterOptions Writer = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
