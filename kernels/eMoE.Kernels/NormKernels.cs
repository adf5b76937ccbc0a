using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace eMoE.Kernels;

/// <summary>RMSNorm, as Llama/Mixtral define it: x * rsqrt(mean(x^2) + eps) * weight.</summary>
public static class NormKernels
{
    /// <summary>
    /// Normalises <paramref name="rows"/> rows of <paramref name="size"/> values: output[r] =
    /// input[r] * rsqrt(mean(input[r]^2) + eps) * weight. Input and output may be the same view
    /// (q/k norm in place). One worker (lanes threads) per row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(ArrayView<float> input, WeightView weight, ArrayView<float> output,
        int rows, int size, float eps, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int stride = Lanes.Workers(lanes);
        for (int r = Lanes.Worker(lanes); r < rows; r += stride)
        {
            long row = (long)r * size;
            float sumSq = 0f;
            for (int i = lane; i < size; i += lanes)
            {
                float v = input[row + i];
                sumSq += v * v;
            }
            float scale = XMath.Rsqrt(Lanes.Sum(sumSq, lanes) / size + eps);
            for (int i = lane; i < size; i += lanes)
                output[row + i] = input[row + i] * scale * weight[i];
        }
    }

    /// <summary>Plain C# reference of <see cref="RmsNorm"/>.</summary>
    public static void RmsNormReference(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int size, float eps)
    {
        for (int row = 0; row < input.Length / size; row++)
        {
            var x = input.Slice(row * size, size);
            double sumSq = 0;
            foreach (float v in x) sumSq += v * v;
            float scale = (float)(1.0 / Math.Sqrt(sumSq / size + eps));
            for (int i = 0; i < size; i++) output[row * size + i] = x[i] * scale * weight[i];
        }
    }
}
