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
/// worker computes four weight rows against every assignment of its tile
/// (<see cref="Quads.DotTileOf"/>), so a batch reads each expert row once per tile instead of once
/// per token. Every dot product still sums in the same order, so an assignment's result does not
/// depend on which assignments share its tile. H and I must be
/// multiples of 4 (rows are read four values at a time, <see cref="Quads"/>).
/// </summary>
public static class ExpertKernels
{
    /// <summary>Assignments of one expert a worker computes against each weight row it reads (up to 8: <see cref="Quads.DotTile8"/>).</summary>
    public const int Tile = 8;

    /// <summary>
    /// Upper bound on the tiles of a layer: each tile holds at least one assignment, and each expert
    /// leaves at most one short tile.
    /// </summary>
    public static int MaxTiles(int assignments, int experts) => XMath.Min(assignments, assignments / Tile + experts);

    /// <summary>Intermediate rows one <see cref="GateUp"/> item computes (each a gate and an up row: four weight rows).</summary>
    public const int GateUpRows = 2;

    /// <summary>Output rows one <see cref="Down"/> item computes.</summary>
    public const int DownRows = 4;

    /// <summary>Work items of <see cref="GateUp"/>: (tile, pair of intermediate rows).</summary>
    public static long GateUpItems(int tokens, int topK, int experts, int intermediate) => (long)MaxTiles(tokens * topK, experts) * (intermediate / GateUpRows);

    /// <summary>Work items of <see cref="Down"/>: (tile, four output rows).</summary>
    public static long DownItems(int tokens, int topK, int experts, int hidden) => (long)MaxTiles(tokens * topK, experts) * (hidden / DownRows);

    /// <summary>
    /// Gate and up projections, fused: one item reads the gate and the up rows of two intermediate
    /// rows (four weight rows, <see cref="Quads.DotTileOf"/>) against every assignment of its tile. Every
    /// assignment is computed (no capacity limit).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void GateUp(ExpertArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int h = a.HiddenSize, inter = a.Intermediate;
        long slotSize = 3L * inter * h;
        int pairs = inter / GateUpRows;
        long total = GateUpItems(a.Tokens, a.TopK, a.Experts, inter);
        var x = a.X.Cast<Float4>();
        var slab = a.Slab.Quads;
        int quads = h / 4;
        int stride = Lanes.Workers(lanes);
        for (long item = Lanes.Worker(lanes); item < total; item += stride)
        {
            var tile = TileAt(a, (int)(item / pairs));
            if (tile.Count == 0) continue; // past the last tile, or computed in another pass
            int i = (int)(item % pairs) * GateUpRows;
            var rows = Activations(a, tile, a.TopK, quads);
            rows.W0 = (tile.Slot * slotSize + (long)i * h) / 4; // gate rows i, i + 1
            rows.W1 = rows.W0 + quads;
            rows.W2 = rows.W0 + (long)inter * quads; // up rows i, i + 1
            rows.W3 = rows.W2 + quads;
            var d = Quads.DotTileOf(tile.Count, x, slab, rows, quads, lane, lanes);
            if (lane != 0) continue;
            for (int j = 0; j < tile.Count; j++) StoreHidden(a, a.Order[tile.Start + j], i, d.Activation(j));
        }
    }

    /// <summary>
    /// Down projection of each assignment whose expert is resident in this pass:
    /// output[a, r] = w2[e_a][r] . hidden[a]. One worker per (tile, four output rows).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Down(ExpertArgs a, int lanes)
    {
        int lane = Lanes.Lane(lanes);
        int h = a.HiddenSize, inter = a.Intermediate;
        long slotSize = 3L * inter * h;
        int rowTiles = h / DownRows;
        long total = DownItems(a.Tokens, a.TopK, a.Experts, h);
        var hidden = a.Hidden.Cast<Float4>();
        var slab = a.Slab.Quads;
        int quads = inter / 4;
        int stride = Lanes.Workers(lanes);
        for (long item = Lanes.Worker(lanes); item < total; item += stride)
        {
            var tile = TileAt(a, (int)(item / rowTiles));
            if (tile.Count == 0) continue;
            int r = (int)(item % rowTiles) * DownRows;
            var rows = Activations(a, tile, 1, quads); // hidden has one row per assignment
            rows.W0 = (tile.Slot * slotSize + 2L * inter * h + (long)r * inter) / 4;
            rows.W1 = rows.W0 + quads;
            rows.W2 = rows.W1 + quads;
            rows.W3 = rows.W2 + quads;
            var d = Quads.DotTileOf(tile.Count, hidden, slab, rows, quads, lane, lanes);
            if (lane != 0) continue;
            for (int j = 0; j < tile.Count; j++) StoreOutput(a, a.Order[tile.Start + j], r, d.Activation(j));
        }
    }

    /// <summary>
    /// A tile's assignments as activation rows: row assignment / <paramref name="rowsPer"/> of a view
    /// with <paramref name="quads"/> quads per row (X: one row per token, so top-k assignments share
    /// it; Hidden: one per assignment). A short tile repeats its last assignment.
    /// </summary>
    private static TileRows Activations(ExpertArgs a, ExpertTile tile, int rowsPer, int quads)
    {
        TileRows rows = default;
        for (int j = 0; j < Tile; j++)
            rows.SetActivation(j, (long)(a.Order[tile.Start + XMath.Min(j, tile.Count - 1)] / rowsPer) * quads);
        return rows;
    }

    /// <summary>hidden[b, i..i+1] = silu(gate) * up, from one assignment's (gate i, gate i+1, up i, up i+1).</summary>
    private static void StoreHidden(ExpertArgs a, int b, int i, Float4 d)
    {
        long o = (long)b * a.Intermediate + i;
        a.Hidden[o] = Silu(d.X) * d.Z;
        a.Hidden[o + 1] = Silu(d.Y) * d.W;
    }

    /// <summary>output[b, r..r+3].</summary>
    private static void StoreOutput(ExpertArgs a, int b, int r, Float4 d)
    {
        long o = (long)b * a.HiddenSize + r;
        a.Output[o] = d.X;
        a.Output[o + 1] = d.Y;
        a.Output[o + 2] = d.Z;
        a.Output[o + 3] = d.W;
    }

    /// <summary>
    /// Tile <paramref name="index"/> of this layer: where its assignments start in Order, how many
    /// there are, and its expert's slot; Count 0 past the last tile or when the expert is not on the
    /// device in this pass.
    /// </summary>
    private static ExpertTile TileAt(ExpertArgs a, int index)
    {
        ExpertTile tile = default;
        int p = TileStart(a, index);
        if (p < 0) return tile;
        int expert = a.ExpertIds[a.Order[p]];
        int slot = a.SlotOfExpert[expert];
        if (slot < 0) return tile;
        tile.Count = XMath.Min(Tile, a.Offsets[expert + 1] - p);
        tile.Slot = slot;
        tile.Start = p;
        return tile;
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

/// <summary>One tile of an expert's assignments (<see cref="ExpertKernels"/>).</summary>
internal struct ExpertTile
{
    /// <summary>Assignments, 1..<see cref="ExpertKernels.Tile"/>; 0: nothing to compute.</summary>
    public int Count;
    /// <summary>The expert's slot in the slab.</summary>
    public int Slot;
    /// <summary>Position of the first assignment in <see cref="ExpertArgs.Order"/>.</summary>
    public int Start;
}
