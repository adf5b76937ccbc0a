using System.Text;
using System.Text.Json;

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
        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        var data = new MemoryStream();
        foreach (var (name, shape, values) in tensors)
        {
            long begin = data.Length;
            foreach (float v in values) data.Write(BitConverter.GetBytes(v));
            header[name] = new { dtype = "F32", shape, data_offsets = new[] { begin, data.Length } };
        }
        WriteRaw(path, JsonSerializer.Serialize(header), 0);
        using var stream = new FileStream(path, FileMode.Append);
        stream.Write(data.ToArray());
        return path;
    }
}
