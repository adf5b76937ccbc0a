using System.Text;
using eMoE.Model;

namespace eMoE.Tests.Model;

/// <summary>Writes safetensors files for tests, including deliberately malformed ones.</summary>
internal static class SafetensorsBuilder
{
    /// <summary>A file whose header is exactly <paramref name="headerJson"/> followed by <paramref name="dataBytes"/> zero bytes.</summary>
    public static string WriteRaw(string path, string headerJson, int dataBytes, long? declaredHeaderLength = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes(declaredHeaderLength ?? header.Length));
        stream.Write(header);
        stream.Write(new byte[dataBytes]);
        return path;
    }

    /// <summary>A well-formed F32 file holding the given tensors.</summary>
    public static string Write(string path, IEnumerable<(string Name, long[] Shape, float[] Data)> tensors)
    {
        SafetensorsFile.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        return path;
    }
}
