using System.Runtime.CompilerServices;
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
    /// <summary>Where each expert's assignments start in <see cref="Order"/> [E + 1] (from GroupByExpert).</summary>
    public ArrayView<int> Offsets;
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
    /// <summary>E: experts of the layer.</summary>
    public int Experts;
}

/// <summary>
/// SwiGLU experts over the tokens routed to each expert: w2(silu(w1 x) * w3 x). The assignments of one
/// expert are cut into tiles of up to <see cref="Tile"/> (never straddling two experts), and one
/// worker computes a weight row against every assignment of its tile, so a batch reads each expert
/// row once per tile instead of once per token. Every dot product still sums in the same order, so
/// an assignment's result does not depend on which assignments share its tile. H and I must be
/// multiples of 4 (rows are read four values at a time, <see cref="Quads"/>).
/// </summary>
public static class ExpertKernels
{
    /// <summary>Assignments of one expert a worker computes against each weight row it reads.</summary>
    public const int Tile = 4;

    /// <summary>
    /// Upper bound on the tiles of a layer: each tile holds at least one assignment, and each expert
    /// leaves at most one short tile.
    /// </summary>
    public static int MaxTiles(int assignments, int experts) => XMath.Min(assignments, assignments / Tile + experts);

    /// <summary>Work items of <see cref="GateUp"/>: (tile, intermediate row).</summary>
    public static long GateUpItems(int tokens, int topK, int experts, int intermediate) => (long)MaxTiles(tokens * topK, experts) * intermediate;

    /// <summary>Work items of <see cref="Down"/>: (tile, output row).</summary>
    public static long DownItems(int tokens, int topK, int experts, int hidden) => (long)MaxTiles(tokens * topK, experts) * hidden;

    /// <summary>
    /// Gate and up projections, fused: one pass over a row pair of w1 and w3 serves both dot products
    /// of every assignment in the tile. Every assignment is computed (no capacity limit).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void GateUp(ExpertArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int h = a.HiddenSize, inter = a.Intermediate;
        long slotSize = 3L * inter * h;
        long total = (long)MaxTiles(a.Tokens * a.TopK, a.Experts) * inter;
        var x = a.X.Cast<Float4>();
        var slab = a.Slab.Quads;
        int quads = h / 4;
        int stride = Lanes.Workers(lanes);
        for (long item = Lanes.Worker(lanes); item < total; item += stride)
        {
            int p = TileStart(a, (int)(item / inter));
            if (p < 0) continue; // past the last tile
            int expert = a.ExpertIds[a.Order[p]];
            int slotIndex = a.SlotOfExpert[expert];
            if (slotIndex < 0) continue; // computed in another pass
            int count = XMath.Min(Tile, a.Offsets[expert + 1] - p);
            int i = (int)(item % inter);
            long gate = (slotIndex * slotSize + (long)i * h) / 4, up = gate + (long)inter * quads;
            if (count < 3)
            {
                // One or two assignments (most decode tiles): a 4-wide tile would read more activations than it saves.
                if (count == 1) GateUpOne(a, x, slab, a.Order[p], gate, up, i, quads, lane, lanes);
                else GateUpTwo(a, x, slab, a.Order[p], a.Order[p + 1], gate, up, i, quads, lane, lanes);
                continue;
            }
            // A short tile repeats its last assignment; only real assignments are written.
            int a0 = a.Order[p], a1 = a.Order[p + 1], a2 = a.Order[p + 2], a3 = a.Order[p + XMath.Min(3, count - 1)];
            long x0 = (long)(a0 / a.TopK) * quads, x1 = (long)(a1 / a.TopK) * quads, x2 = (long)(a2 / a.TopK) * quads, x3 = (long)(a3 / a.TopK) * quads;
            float g0 = 0f, g1 = 0f, g2 = 0f, g3 = 0f, u0 = 0f, u1 = 0f, u2 = 0f, u3 = 0f;
            for (int q = lane; q < quads; q += lanes)
            {
                var wg = slab[gate + q];
                var wu = slab[up + q];
                var v0 = x[x0 + q];
                var v1 = x[x1 + q];
                var v2 = x[x2 + q];
                var v3 = x[x3 + q];
                // Quads.Dot written out: the JIT does not inline it into a loop this large.
                g0 += v0.X * wg.X;
                g0 += v0.Y * wg.Y;
                g0 += v0.Z * wg.Z;
                g0 += v0.W * wg.W;
                u0 += v0.X * wu.X;
                u0 += v0.Y * wu.Y;
                u0 += v0.Z * wu.Z;
                u0 += v0.W * wu.W;
                g1 += v1.X * wg.X;
                g1 += v1.Y * wg.Y;
                g1 += v1.Z * wg.Z;
                g1 += v1.W * wg.W;
                u1 += v1.X * wu.X;
                u1 += v1.Y * wu.Y;
                u1 += v1.Z * wu.Z;
                u1 += v1.W * wu.W;
                g2 += v2.X * wg.X;
                g2 += v2.Y * wg.Y;
                g2 += v2.Z * wg.Z;
                g2 += v2.W * wg.W;
                u2 += v2.X * wu.X;
                u2 += v2.Y * wu.Y;
                u2 += v2.Z * wu.Z;
                u2 += v2.W * wu.W;
                g3 += v3.X * wg.X;
                g3 += v3.Y * wg.Y;
                g3 += v3.Z * wg.Z;
                g3 += v3.W * wg.W;
                u3 += v3.X * wu.X;
                u3 += v3.Y * wu.Y;
                u3 += v3.Z * wu.Z;
                u3 += v3.W * wu.W;
            }
            g0 = Lanes.Sum(g0, lanes); u0 = Lanes.Sum(u0, lanes);
            g1 = Lanes.Sum(g1, lanes); u1 = Lanes.Sum(u1, lanes);
            g2 = Lanes.Sum(g2, lanes); u2 = Lanes.Sum(u2, lanes);
            g3 = Lanes.Sum(g3, lanes); u3 = Lanes.Sum(u3, lanes);
            if (lane != 0) continue;
            a.Hidden[(long)a0 * inter + i] = Silu(g0) * u0;
            a.Hidden[(long)a1 * inter + i] = Silu(g1) * u1;
            a.Hidden[(long)a2 * inter + i] = Silu(g2) * u2;
            if (count == 4) a.Hidden[(long)a3 * inter + i] = Silu(g3) * u3;
        }
    }

    /// <summary>
    /// Down projection of each assignment whose expert is resident in this pass:
    /// output[a, r] = w2[e_a][r] . hidden[a]. One worker per (tile, output row).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Down(ExpertArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int h = a.HiddenSize, inter = a.Intermediate;
        long slotSize = 3L * inter * h;
        long total = (long)MaxTiles(a.Tokens * a.TopK, a.Experts) * h;
        var hidden = a.Hidden.Cast<Float4>();
        var slab = a.Slab.Quads;
        int quads = inter / 4;
        int stride = Lanes.Workers(lanes);
        for (long item = Lanes.Worker(lanes); item < total; item += stride)
        {
            int p = TileStart(a, (int)(item / h));
            if (p < 0) continue;
            int expert = a.ExpertIds[a.Order[p]];
            int slotIndex = a.SlotOfExpert[expert];
            if (slotIndex < 0) continue;
            int count = XMath.Min(Tile, a.Offsets[expert + 1] - p);
            int r = (int)(item % h);
            long down = (slotIndex * slotSize + 2L * inter * h + (long)r * inter) / 4;
            if (count < 3)
            {
                DownOneOrTwo(a, hidden, slab, a.Order[p], count == 2 ? a.Order[p + 1] : -1, down, r, quads, lane, lanes);
                continue;
            }
            int a0 = a.Order[p], a1 = a.Order[p + 1], a2 = a.Order[p + 2], a3 = a.Order[p + XMath.Min(3, count - 1)];
            var d = Quads.DotFourRows(hidden, (long)a0 * quads, (long)a1 * quads, (long)a2 * quads, (long)a3 * quads, slab, down, quads, lane, lanes);
            if (lane != 0) continue;
            a.Output[(long)a0 * h + r] = d.X;
            a.Output[(long)a1 * h + r] = d.Y;
            a.Output[(long)a2 * h + r] = d.Z;
            if (count == 4) a.Output[(long)a3 * h + r] = d.W;
        }
    }

    /// <summary>Gate and up rows of one assignment.</summary>
    private static void GateUpOne(ExpertArgs a, ArrayView<Float4> x, WeightQuads slab, int b0, long gate, long up, int i, int quads, int lane, int lanes)
    {
        long r0 = (long)(b0 / a.TopK) * quads;
        float g = 0f, u = 0f;
        for (int q = lane; q < quads; q += lanes)
        {
            var v = x[r0 + q];
            g = Quads.Dot(g, v, slab[gate + q]);
            u = Quads.Dot(u, v, slab[up + q]);
        }
        g = Lanes.Sum(g, lanes);
        u = Lanes.Sum(u, lanes);
        if (lane == 0) a.Hidden[(long)b0 * a.Intermediate + i] = Silu(g) * u;
    }

    /// <summary>Gate and up rows of two assignments sharing each weight read.</summary>
    private static void GateUpTwo(ExpertArgs a, ArrayView<Float4> x, WeightQuads slab, int b0, int b1, long gate, long up, int i, int quads, int lane, int lanes)
    {
        long r0 = (long)(b0 / a.TopK) * quads, r1 = (long)(b1 / a.TopK) * quads;
        float g0 = 0f, u0 = 0f, g1 = 0f, u1 = 0f;
        for (int q = lane; q < quads; q += lanes)
        {
            var wg = slab[gate + q];
            var wu = slab[up + q];
            var v0 = x[r0 + q];
            var v1 = x[r1 + q];
            g0 = Quads.Dot(g0, v0, wg);
            u0 = Quads.Dot(u0, v0, wu);
            g1 = Quads.Dot(g1, v1, wg);
            u1 = Quads.Dot(u1, v1, wu);
        }
        g0 = Lanes.Sum(g0, lanes); u0 = Lanes.Sum(u0, lanes);
        g1 = Lanes.Sum(g1, lanes); u1 = Lanes.Sum(u1, lanes);
        if (lane != 0) return;
        a.Hidden[(long)b0 * a.Intermediate + i] = Silu(g0) * u0;
        a.Hidden[(long)b1 * a.Intermediate + i] = Silu(g1) * u1;
    }

    /// <summary>Down rows of one assignment, or of two (<paramref name="b1"/> &gt;= 0) sharing each weight read.</summary>
    private static void DownOneOrTwo(ExpertArgs a, ArrayView<Float4> hidden, WeightQuads slab, int b0, int b1, long down, int r, int quads, int lane, int lanes)
    {
        long r0 = (long)b0 * quads, r1 = (long)XMath.Max(b1, 0) * quads;
        float d0 = 0f, d1 = 0f;
        for (int q = lane; q < quads; q += lanes)
        {
            var w = slab[down + q];
            d0 = Quads.Dot(d0, hidden[r0 + q], w);
            if (b1 >= 0) d1 = Quads.Dot(d1, hidden[r1 + q], w);
        }
        d0 = Lanes.Sum(d0, lanes);
        d1 = Lanes.Sum(d1, lanes);
        if (lane != 0) return;
        a.Output[(long)b0 * a.HiddenSize + r] = d0;
        if (b1 >= 0) a.Output[(long)b1 * a.HiddenSize + r] = d1;
    }

    /// <summary>
    /// Position in <see cref="ExpertArgs.Order"/> where tile <paramref name="tile"/> starts, or -1 past
    /// the last tile. Tiles are numbered expert by expert; a scan over E offsets is cheap next to a row.
    /// </summary>
    private static int TileStart(ExpertArgs a, int tile)
    {
        for (int e = 0; e < a.Experts; e++)
        {
            int start = a.Offsets[e];
            int tiles = (a.Offsets[e + 1] - start + Tile - 1) / Tile;
            if (tile < tiles) return start + tile * Tile;
            tile -= tiles;
        }
        return -1;
    }

    /// <summary>
    /// Weighted combine into the residual stream: residual[t, r] += sum_j w[t,j] * output[t*K+j, r],
    /// the k experts summed in rank order, so the result does not depend on how many passes the
    /// experts were computed in.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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
