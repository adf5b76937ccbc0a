using System.Text.Json;

namespace eMoE.Model;

/// <summary>
/// The tensors of a Hugging Face checkpoint: one <c>model.safetensors</c>, or shards listed by
/// <c>model.safetensors.index.json</c>. Files stay memory-mapped until disposed.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, (TensorInfo Info, SafetensorsFile File)> _tensors;

    /// <summary>The directory the checkpoint was opened from.</summary>
    public string Directory { get; }

    /// <summary>Every tensor, by name.</summary>
    public IEnumerable<TensorInfo> Tensors => _tensors.Values.Select(t => t.Info);

    /// <summary>Total bytes of tensor data across all files.</summary>
    public long TotalBytes => _tensors.Values.Sum(t => t.Info.ByteLength);

    private Checkpoint(string directory, List<SafetensorsFile> files)
    {
        Directory = directory;
        _files = files;
        _tensors = [];
        foreach (var file in files)
        {
            foreach (var t in file.Tensors)
            {
                if (!_tensors.TryAdd(t.Name, (t, file)))
                    throw new ModelFormatException($"{file.Path}: tensor '{t.Name}' also appears in {_tensors[t.Name].File.Path}");
            }
        }
    }

    /// <summary>Opens and validates the safetensors file(s) of a model directory.</summary>
    /// <exception cref="ModelFormatException">A file is missing or malformed; the message names it.</exception>
    public static Checkpoint Open(string modelDirectory)
    {
        string index = Path.Combine(modelDirectory, "model.safetensors.index.json");
        string single = Path.Combine(modelDirectory, "model.safetensors");
        IEnumerable<string> paths;
        if (File.Exists(index)) paths = ReadIndex(index, modelDirectory);
        else if (File.Exists(single)) paths = [single];
        else
            throw new ModelFormatException($"{modelDirectory}: no model.safetensors or model.safetensors.index.json");

        var files = new List<SafetensorsFile>();
        try
        {
            foreach (string p in paths) files.Add(SafetensorsFile.Open(p));
            var checkpoint = new Checkpoint(modelDirectory, files);
            if (File.Exists(index)) checkpoint.CheckIndex(index);
            return checkpoint;
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    private static List<string> ReadIndex(string index, string directory)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException($"{index}: missing weight_map");
            var names = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                string? file = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString() : null;
                if (string.IsNullOrEmpty(file) || file.Contains('/') || file.Contains('\\') || file.Contains(".."))
                    throw new ModelFormatException($"{index}: tensor '{entry.Name}' maps to an invalid file name");
                names.Add(file);
            }
            return names.Select(n => Path.Combine(directory, n)).ToList();
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{index}: not valid JSON ({e.Message})", e);
        }
    }

    private void CheckIndex(string index)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
        foreach (var entry in doc.RootElement.GetProperty("weight_map").EnumerateObject())
        {
            if (!_tensors.TryGetValue(entry.Name, out var t))
                throw new ModelFormatException($"{index}: tensor '{entry.Name}' is listed but missing from {entry.Value.GetString()}");
            if (Path.GetFileName(t.File.Path) != entry.Value.GetString())
                throw new ModelFormatException($"{index}: tensor '{entry.Name}' is listed in {entry.Value.GetString()} but stored in {Path.GetFileName(t.File.Path)}");
        }
    }

    /// <summary>Whether a tensor exists.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>A tensor that must exist, whatever its shape.</summary>
    /// <exception cref="ModelFormatException">Missing; the message names the tensor.</exception>
    public TensorInfo Get(string name) =>
        _tensors.TryGetValue(name, out var t) ? t.Info
            : throw new ModelFormatException($"{Directory}: tensor '{name}' is missing from the checkpoint");

    /// <summary>A tensor that must exist with exactly this shape.</summary>
    /// <exception cref="ModelFormatException">Missing, or of another shape; the message names the tensor.</exception>
    public TensorInfo Require(string name, params long[] shape)
    {
        var info = Get(name);
        var t = _tensors[name];
        if (!info.Shape.SequenceEqual(shape))
            throw new ModelFormatException(
                $"{t.File.Path}: tensor '{name}' has shape {t.Info.ShapeText}, expected [{string.Join(", ", shape)}]");
        return t.Info;
    }

    /// <summary>The bytes of a tensor, straight from the memory mapping (no copy).</summary>
    public ReadOnlySpan<byte> Bytes(TensorInfo tensor) => _tensors[tensor.Name].File.Bytes(tensor);

    /// <summary>Where a tensor's bytes are mapped (valid while the checkpoint is open): the host backend reads weights in place.</summary>
    internal IntPtr Pointer(TensorInfo tensor) => _tensors[tensor.Name].File.Pointer(tensor);

    /// <summary>Reads a tensor widened to F32 (for small tensors and references; allocates).</summary>
    public float[] ReadF32(TensorInfo tensor)
    {
        var result = new float[tensor.ElementCount];
        WeightConversion.ToF32(Bytes(tensor), tensor.DType, result);
        return result;
    }

    /// <summary>Unmaps every file.</summary>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
