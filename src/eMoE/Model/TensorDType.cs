namespace eMoE.Model;

/// <summary>Element types of checkpoint tensors that the engine reads.</summary>
public enum TensorDType
{
    /// <summary>IEEE 754 single precision.</summary>
    F32,
    /// <summary>IEEE 754 half precision.</summary>
    F16,
    /// <summary>bfloat16: the upper 16 bits of an F32.</summary>
    BF16,
}

/// <summary>Helpers for <see cref="TensorDType"/>.</summary>
public static class TensorDTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int ItemSize(this TensorDType dtype) => dtype == TensorDType.F32 ? 4 : 2;

    /// <summary>Parses a safetensors dtype string; null when the engine does not read that type.</summary>
    public static TensorDType? ParseSafetensors(string dtype) => dtype switch
    {
        "F32" => TensorDType.F32,
        "F16" => TensorDType.F16,
        "BF16" => TensorDType.BF16,
        _ => null,
    };
}

/// <summary>One tensor of a checkpoint: where its bytes are and what they hold.</summary>
/// <param name="Name">Tensor name, e.g. <c>model.layers.0.self_attn.q_proj.weight</c>.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions, row-major; weights are [out_features, in_features].</param>
/// <param name="File">The safetensors file holding it.</param>
/// <param name="DataOffset">Byte offset of the first element from the start of the file.</param>
/// <param name="ByteLength">Bytes of data: product of the shape times the item size.</param>
public sealed record TensorInfo(string Name, TensorDType DType, long[] Shape, string File, long DataOffset, long ByteLength)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The shape written as [a, b].</summary>
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}
