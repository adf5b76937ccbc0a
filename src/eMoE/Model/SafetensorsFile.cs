using System.IO.MemoryMappedFiles;
using System.Text.Json;

namespace eMoE.Model;

/// <summary>
/// One memory-mapped <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON
/// header mapping tensor names to dtype, shape and data offsets, then the raw data. The header is
/// validated fully on open; tensor bytes are never copied into managed arrays.
/// </summary>
internal sealed unsafe class SafetensorsFile : IDisposable
{
    // Hugging Face's safetensors caps the header at 100 MB.
    private const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;

    public string Path { get; }
    public long Length { get; }
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>The header's <c>__metadata__</c> (string to string, as the format specifies); empty when absent.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path, MemoryMappedFile file, MemoryMappedViewAccessor view, long length)
    {
        Path = path;
        _file = file;
        _view = view;
        Length = length;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref _base);
        _base += _view.PointerOffset;
        (Tensors, Metadata) = ParseHeader();
    }

    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException($"{path}: not found");
        long length = new FileInfo(path).Length;
        if (length < 8) throw new ModelFormatException($"{path}: too short to be a safetensors file ({length} bytes)");
        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            return new SafetensorsFile(path, file, view, length);
        }
        catch
        {
            view?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes F32 <paramref name="tensors"/> as a safetensors file (shapes as given, data in order),
    /// with <paramref name="metadata"/> as its <c>__metadata__</c>.
    /// </summary>
    public static void Write(string path, IEnumerable<(string Name, long[] Shape, float[] Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new Dictionary<string, object> { ["__metadata__"] = metadata ?? new Dictionary<string, string>() };
        var data = new MemoryStream();
        foreach (var (name, shape, values) in tensors)
        {
            long begin = data.Length;
            data.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
            header[name] = new { dtype = "F32", shape, data_offsets = new[] { begin, data.Length } };
        }
        var json = System.Text.Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((long)json.Length));
        stream.Write(json);
        data.Position = 0;
        data.CopyTo(stream);
    }

    /// <summary>The bytes of one tensor of this file, straight from the mapping.</summary>
    public ReadOnlySpan<byte> Bytes(TensorInfo tensor)
    {
        if (tensor.File != Path) throw new ArgumentException($"tensor {tensor.Name} belongs to {tensor.File}, not {Path}");
        if (tensor.ByteLength > int.MaxValue)
            throw new NotSupportedException($"{Path}: tensor {tensor.Name} is larger than 2 GiB; read it with Pointer()");
        return new ReadOnlySpan<byte>(_base + tensor.DataOffset, (int)tensor.ByteLength);
    }

    /// <summary>Pointer to the first byte of a tensor, valid while this file is open.</summary>
    public IntPtr Pointer(TensorInfo tensor) => (IntPtr)(_base + tensor.DataOffset);

    private (List<TensorInfo> Tensors, Dictionary<string, string> Metadata) ParseHeader()
    {
        long headerLength = *(long*)_base; // safetensors is little-endian, as is every platform .NET runs on here
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("big-endian hosts are not supported");
        if (headerLength <= 0 || headerLength > MaxHeaderBytes || 8 + headerLength > Length)
            throw new ModelFormatException($"{Path}: header length {headerLength} is out of bounds for a file of {Length} bytes");

        long dataStart = 8 + headerLength;
        long dataLength = Length - dataStart;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(new ReadOnlyMemory<byte>(new ReadOnlySpan<byte>(_base + 8, (int)headerLength).ToArray()));
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{Path}: header is not valid JSON ({e.Message})", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException($"{Path}: header must be a JSON object");
            var tensors = new List<TensorInfo>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__")
                {
                    metadata = ParseMetadata(entry.Value);
                    continue;
                }
                tensors.Add(ParseEntry(entry, dataStart, dataLength));
            }
            CheckNoOverlap(tensors);
            return (tensors, metadata);
        }
    }

    private Dictionary<string, string> ParseMetadata(JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Object) throw new ModelFormatException($"{Path}: __metadata__ must be a JSON object");
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var item in element.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new ModelFormatException($"{Path}: __metadata__ value '{item.Name}' must be a string");
            metadata[item.Name] = item.Value.GetString()!;
        }
        return metadata;
    }

    private TensorInfo ParseEntry(JsonProperty entry, long dataStart, long dataLength)
    {
        string name = entry.Name;
        string where = $"{Path}: tensor '{name}'";
        var v = entry.Value;
        if (v.ValueKind != JsonValueKind.Object) throw new ModelFormatException($"{where}: entry is not an object");

        if (!v.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw new ModelFormatException($"{where}: missing dtype");
        string dtypeText = dtypeEl.GetString()!;
        TensorDType dtype = TensorDTypeExtensions.ParseSafetensors(dtypeText)
            ?? throw new ModelFormatException($"{where}: dtype {dtypeText} is not supported (F32, F16, BF16 are)");

        if (!v.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw new ModelFormatException($"{where}: missing shape");
        var shape = new long[shapeEl.GetArrayLength()];
        int i = 0;
        long elements = 1;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new ModelFormatException($"{where}: shape must be non-negative integers");
            shape[i++] = dim;
            elements = checked(elements * dim);
        }

        if (!v.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2
            || !offEl[0].TryGetInt64(out long begin) || !offEl[1].TryGetInt64(out long end))
            throw new ModelFormatException($"{where}: data_offsets must be [begin, end]");
        if (begin < 0 || end < begin || end > dataLength)
            throw new ModelFormatException($"{where}: data_offsets [{begin}, {end}] lie outside the {dataLength} data bytes of the file");
        long expected = checked(elements * dtype.ItemSize());
        if (end - begin != expected)
            throw new ModelFormatException(
                $"{where}: shape [{string.Join(", ", shape)}] x {dtype.ItemSize()} bytes = {expected} bytes, but data_offsets span {end - begin}");
        return new TensorInfo(name, dtype, shape, Path, dataStart + begin, end - begin);
    }

    private void CheckNoOverlap(List<TensorInfo> tensors)
    {
        var sorted = tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.DataOffset).ToList();
        for (int i = 1; i < sorted.Count; i++)
        {
            var a = sorted[i - 1];
            var b = sorted[i];
            if (a.DataOffset + a.ByteLength > b.DataOffset)
                throw new ModelFormatException($"{Path}: tensors '{a.Name}' and '{b.Name}' overlap in the data section");
        }
    }

    public void Dispose()
    {
        if (_base != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
        }
        _view.Dispose();
        _file.Dispose();
    }
}
