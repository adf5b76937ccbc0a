using eMoE.Prediction;

namespace eMoE.Inference;

/// <summary>
/// What one sequence asks of the forward pass for its own rows, besides running them: observers
/// fixed when the sequence is created, so nothing on the forward pass is switched on and off.
/// </summary>
internal sealed class SequenceHooks
{
    /// <summary>Sees the routing of the sequence's rows (trace recording, the predictor's learning); null: nobody.</summary>
    public IRoutingObserver? Routing { get; init; }

    /// <summary>Sees the sequence's rows' MoE inputs and router logits (pre-gate fitting); null: nobody.</summary>
    public IRouterInputObserver? RouterInputs { get; init; }

    /// <summary>
    /// Profiling: the layer whose routing of this sequence's rows is replaced by k distinct random
    /// experts (keeping the router weights), drawn from <see cref="RoutingNoise"/>; -1 for none.
    /// </summary>
    public int RandomRoutingLayer { get; init; } = -1;

    /// <summary>The random source of <see cref="RandomRoutingLayer"/>.</summary>
    public Random? RoutingNoise { get; init; }

    /// <summary>Whether any hook needs the routing read back beyond the expert ids.</summary>
    public bool WantsWeights => Routing is not null || RouterInputs is not null;
}

/// <summary>One sequence's rows in a step: rows FirstRow.. at positions StartPosition.., and its hooks (null: none this step).</summary>
internal readonly record struct StepSlice(int FirstRow, int Rows, int StartPosition, SequenceHooks? Hooks);

/// <summary>A row whose logits are sampled with the row's sequence's settings and the host's draw.</summary>
internal readonly record struct SampleRow(int Row, SamplingOptions Options, float Uniform);

/// <summary>
/// A row whose logits are scored against <paramref name="Target"/> (its next token), and optionally
/// copied to <paramref name="Logits"/> at element <paramref name="Offset"/>.
/// </summary>
internal readonly record struct ScoreRow(int Row, int Target, float[]? Logits = null, long Offset = 0);

/// <summary>
/// One forward step over a ragged batch: any mix of decode tokens and prefill chunks of different
/// sequences, laid out sequence by sequence, each token with its own position and KV-cache row.
/// Filled by the engine, read by the forward pass, reused from step to step (arrays sized once by
/// the step token budget). The forward pass writes the sampled tokens and scores back into it.
/// </summary>
internal sealed class StepBatch
{
    /// <summary>Tokens in the step (T).</summary>
    public int Tokens { get; private set; }
    /// <summary>The step's number in its engine (traces record it: requests that shared a step were loaded together).</summary>
    public long Number { get; set; }
    public int[] TokenIds { get; }        // [maxT]
    public int[] Positions { get; }       // [maxT] position of each token in its sequence
    public int[] CacheRows { get; }       // [maxT] KV-pool row each token writes
    public int[] SequenceOf { get; }      // [maxT] block-table row of each token's sequence
    public int[] BlockTables { get; }     // [maxSequences, maxBlocks] one row per sequence in the step
    public List<StepSlice> Slices { get; } = [];
    public List<SampleRow> Samples { get; } = [];
    public List<ScoreRow> Scores { get; } = [];
    public int[] Sampled { get; }         // [maxT] result: token chosen for Samples[i]
    public float[] Nll { get; }           // [maxT] result: -log p(target) for Scores[i]

    public int MaxTokens { get; }
    public int MaxSequences { get; }
    public int MaxBlocks { get; }

    public StepBatch(int maxTokens, int maxSequences, int maxBlocks)
    {
        MaxTokens = maxTokens;
        MaxSequences = maxSequences;
        MaxBlocks = maxBlocks;
        TokenIds = new int[maxTokens];
        Positions = new int[maxTokens];
        CacheRows = new int[maxTokens];
        SequenceOf = new int[maxTokens];
        BlockTables = new int[maxSequences * maxBlocks];
        Sampled = new int[maxTokens];
        Nll = new float[maxTokens];
    }

    /// <summary>Tokens the step can still take.</summary>
    public int Room => MaxTokens - Tokens;

    /// <summary>Empties the step.</summary>
    public void Clear()
    {
        Tokens = 0;
        Slices.Clear();
        Samples.Clear();
        Scores.Clear();
    }

    /// <summary>
    /// Adds <paramref name="tokens"/> of one sequence at positions <paramref name="start"/>.., its
    /// block table covering them and its hooks; returns the first row.
    /// </summary>
    public int Add(ReadOnlySpan<int> tokens, int start, IReadOnlyList<int> blockTable, int blockSize, SequenceHooks? hooks)
    {
        if (tokens.Length == 0 || tokens.Length > Room) throw new ArgumentOutOfRangeException(nameof(tokens), $"1..{Room} more tokens fit this step");
        if (Slices.Count == MaxSequences) throw new InvalidOperationException($"a step holds at most {MaxSequences} sequences");
        if (blockTable.Count > MaxBlocks) throw new ArgumentException($"a sequence holds at most {MaxBlocks} KV blocks");
        int s = Slices.Count;
        for (int j = 0; j < blockTable.Count; j++) BlockTables[s * MaxBlocks + j] = blockTable[j];
        int first = Tokens;
        for (int i = 0; i < tokens.Length; i++)
        {
            int row = first + i, position = start + i;
            TokenIds[row] = tokens[i];
            Positions[row] = position;
            CacheRows[row] = blockTable[position / blockSize] * blockSize + position % blockSize;
            SequenceOf[row] = s;
        }
        Tokens += tokens.Length;
        Slices.Add(new StepSlice(first, tokens.Length, start, hooks));
        return first;
    }

    /// <summary>Rows whose logits the LM head computes: the sampled rows first, then the scored rows.</summary>
    public int LogitRows => Samples.Count + Scores.Count;
}
