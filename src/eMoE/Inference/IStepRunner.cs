namespace eMoE.Inference;

/// <summary>
/// What the engine loop needs of a forward pass: run one ragged step and report where it writes.
/// <see cref="ForwardPass"/> is the real one; a simulated one (a modelled cost on a fake clock)
/// lets the engine loop and its schedulers run deterministically.
/// </summary>
internal interface IStepRunner
{
    /// <summary>Most tokens one step may hold.</summary>
    int MaxTokensPerStep { get; }

    /// <summary>The KV cache whose blocks the engine hands out.</summary>
    PagedKvCache KvCache { get; }

    /// <summary>Binds the device to the calling thread (the engine's loop does this first).</summary>
    void Bind();

    /// <summary>Runs one step and writes its results into <paramref name="step"/> (sampled tokens, scores).</summary>
    void Run(StepBatch step);
}
