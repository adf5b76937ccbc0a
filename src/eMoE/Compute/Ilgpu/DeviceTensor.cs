using System.Runtime.InteropServices;
using eMoE.Kernels;
using eMoE.Model;
using ILGPU.Runtime;

namespace eMoE.Compute.Ilgpu;

/// <summary>A weight tensor uploaded to the device in its checkpoint dtype (16-bit stays 16-bit).</summary>
internal sealed class DeviceTensor : Weight
{
    private readonly DeviceBuffer<float>? _f32;
    private readonly DeviceBuffer<ushort>? _u16;

    public WeightView View { get; }

    private DeviceTensor(IlgpuBackend device, TensorDType dtype, long elements) : base(dtype, elements)
    {
        if (dtype == TensorDType.F32)
        {
            _f32 = device.AllocateDevice<float>(elements);
            View = WeightView.FromF32(_f32.View);
        }
        else
        {
            _u16 = device.AllocateDevice<ushort>(elements);
            View = WeightView.From16(_u16.View, ToWeightType(dtype));
        }
    }

    public static int ToWeightType(TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => WeightType.F32,
        TensorDType.F16 => WeightType.F16,
        _ => WeightType.BF16,
    };

    /// <summary>Allocates room for <paramref name="elements"/> values of <paramref name="dtype"/>.</summary>
    public static DeviceTensor Allocate(IlgpuBackend device, TensorDType dtype, long elements) => new(device, dtype, elements);

    /// <summary>Uploads one checkpoint tensor as its own device tensor.</summary>
    public static DeviceTensor Upload(IlgpuBackend device, Checkpoint checkpoint, TensorInfo tensor)
    {
        var result = new DeviceTensor(device, tensor.DType, tensor.ElementCount);
        result.CopyFrom(checkpoint.Bytes(tensor), 0);
        return result;
    }

    /// <summary>Copies raw tensor bytes (of this tensor's dtype) to element offset <paramref name="elementOffset"/>.</summary>
    public void CopyFrom(ReadOnlySpan<byte> bytes, long elementOffset)
    {
        if (_f32 is not null) _f32.Upload(MemoryMarshal.Cast<byte, float>(bytes), elementOffset);
        else _u16!.Upload(MemoryMarshal.Cast<byte, ushort>(bytes), elementOffset);
    }

    /// <summary>
    /// Queues a copy of <paramref name="bytes"/> bytes from host memory (page-locked for a truly
    /// asynchronous copy on CUDA) to element offset <paramref name="elementOffset"/> on <paramref name="stream"/>.
    /// </summary>
    public unsafe void CopyFromHostAsync(AcceleratorStream stream, IntPtr source, long bytes, long elementOffset)
    {
        if (_f32 is not null)
        {
            long n = bytes / sizeof(float);
            _f32.View.SubView(elementOffset, n).CopyFromCPUUnsafeAsync(stream, ref *(float*)source, n);
        }
        else
        {
            long n = bytes / sizeof(ushort);
            _u16!.View.SubView(elementOffset, n).CopyFromCPUUnsafeAsync(stream, ref *(ushort*)source, n);
        }
    }

    public override void Dispose()
    {
        _f32?.Dispose();
        _u16?.Dispose();
    }
}
