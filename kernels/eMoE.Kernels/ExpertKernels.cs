using ILGPU;
using ILGPU.Algorithms;

namespace eMoE.Kernels;

/// <summary>
/// Arguments of the expert FFN kernels. Experts live in a slab of equally sized slots; a slot holds
/// one expert as [w1 gate (I x H) | w3 up (I x H) | w2 down (H x I)]. <see cref="SlotOfExpert"/>
/// maps this layer's expert ids to slots (-1: not on the device in this pass), so the same kernels
/// serve an all-resident model and a device expert cache that runs a layer in several passes.
/// </summary>
public struct ExpertArgs
{
    /// <summary>Normalised hidden states [T, H].</summary>
    public ArrayView<float> X;
    /// <summary>Chosen experts [T * K].</summary>
    public ArrayView<int> ExpertIds;
    /// <summary>Router weights [T * K].</summary>
    public ArrayView<float> ExpertWeights;
    /// <summary>Assignments grouped by expert [T * K] (from GroupByExpert).</summary>
    public ArrayView<int> Order;
    /// <summary>This layer's expert id to slot map [E].</summary>
    public ArrayView<int> SlotOfExpert;
    /// <summary>The expert slab: slots of 3 * I * H elements.</summary>
    public WeightView Slab;
    /// <summary>Per-assignment intermediate activations [T * K, I].</summary>
    public ArrayView<float> Hidden;
    /// <summary>Per-assignment expert outputs [T * K, H].</summary>
    public ArrayView<float> Output;
    /// <summary>Residual stream [T, H]: the weighted expert outputs are added into it.</summary>
    public ArrayView<float> Residual;
    /// <summary>T.</summary>
    public int Tokens;
    /// <summary>K.</summary>
    public int TopK;
    /// <summary>H.</summary>
    public int HiddenSize;
    /// <summary>I.</summary>
    public int Intermediate;
}

/// <summary>SwiGLU experts over the tokens routed to each expert: w2(silu(w1 x) * w3 x).</summary>
public static class ExpertKernels
{
    /// <summary>
    /// Gate and up projections. Items walk the assignments in expert-grouped order, so workers
    /// side by side share one expert's weights; every assignment is computed (no capacity limit).
    /// </summary>
    public static void GateUp(ExpertArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int h = a.HiddenSize, inter = a.Intermediate;
        long slotSize = 3L * inter * h;
        long total = (long)a.Tokens * a.TopK * inter;
        int stride = Lanes.Workers(lanes);
        for (long item = Lanes.Worker(lanes); item < total; item += stride)
        {
            int assignment = a.Order[(int)(item / inter)];
            int i = (int)(item % inter);
            int t = assignment / a.TopK;
            int slotIndex = a.SlotOfExpert[a.ExpertIds[assignment]];
            if (slotIndex < 0) continue; // computed in another pass
            long slot = slotIndex * slotSize;
            float gate = Lanes.Sum(Lanes.PartialDot(a.X, (long)t * h, a.Slab, slot + (long)i * h, h, lane, lanes), lanes);
            float up = Lanes.Sum(Lanes.PartialDot(a.X, (long)t * h, a.Slab, slot + (long)(inter + i) * h, h, lane, lanes), lanes);
            if (lane == 0) a.Hidden[(long)assignment * inter + i] = Silu(gate) * up;
        }
    }

    /// <summary>
    /// Down projection of each assignment whose expert is resident in this pass:
    /// output[a, r] = w2[e_a][r] . hidden[a]. One worker per (assignment, output row).
    /// </summary>
    public static void Down(ExpertArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int h = a.HiddenSize, inter = a.Intermediate;
        long slotSize = 3L * inter * h;
        long total = (long)a.Tokens * a.TopK * h;
        int stride = Lanes.Workers(lanes);
        for (long item = Lanes.Worker(lanes); item < total; item += stride)
        {
            int assignment = (int)(item / h);
            int r = (int)(item % h);
            int slotIndex = a.SlotOfExpert[a.ExpertIds[assignment]];
            if (slotIndex < 0) continue;
            long down = slotIndex * slotSize + 2L * inter * h + (long)r * inter;
            float dot = Lanes.Sum(Lanes.PartialDot(a.Hidden, (long)assignment * inter, a.Slab, down, inter, lane, lanes), lanes);
            if (lane == 0) a.Output[item] = dot;
        }
    }

    /// <summary>
    /// Weighted combine into the residual stream: residual[t, r] += sum_j w[t,j] * output[t*K+j, r],
    /// the k experts summed in rank order, so the result does not depend on how many passes the
    /// experts were computed in.
    /// </summary>
    public static void Combine(ExpertArgs a)
    {
        int h = a.HiddenSize;
        long total = (long)a.Tokens * h;
        int stride = Lanes.Stride;
        for (long item = Grid.GlobalIndex.X; item < total; item += stride)
        {
            int t = (int)(item / h);
            int r = (int)(item % h);
            float acc = 0f;
            for (int j = 0; j < a.TopK; j++)
            {
                int assignment = t * a.TopK + j;
                acc += a.ExpertWeights[assignment] * a.Output[(long)assignment * h + r];
            }
            a.Residual[item] += acc;
        }
    }

    /// <summary>SiLU: x * sigmoid(x).</summary>
    public static float Silu(float x) => x / (1.0f + XMath.Exp(-x));

    /// <summary>Plain C# reference: one expert applied to one token, out = w2(silu(w1 x) * w3 x).</summary>
    public static void ExpertReference(ReadOnlySpan<float> x, ReadOnlySpan<float> w1, ReadOnlySpan<float> w3, ReadOnlySpan<float> w2, Span<float> output)
    {
        int h = x.Length, inter = w1.Length / h;
        var hidden = new float[inter];
        for (int i = 0; i < inter; i++)
        {
            double g = 0, u = 0;
            for (int k = 0; k < h; k++)
            {
                g += x[k] * w1[i * h + k];
                u += x[k] * w3[i * h + k];
            }
            hidden[i] = (float)(g / (1 + Math.Exp(-g)) * u);
        }
        for (int r = 0; r < h; r++)
        {
            double acc = 0;
            for (int i = 0; i < inter; i++) acc += w2[r * inter + i] * hidden[i];
            output[r] = (float)acc;
        }
    }
}
