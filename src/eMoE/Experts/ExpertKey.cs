namespace eMoE.Experts;

/// <summary>One expert of one MoE layer: the unit that is loaded, cached and evicted.</summary>
/// <param name="Layer">Layer index.</param>
/// <param name="Expert">Expert index within the layer.</param>
public readonly record struct ExpertKey(int Layer, int Expert)
{
    /// <inheritdoc/>
    public override string ToString() => $"L{Layer}E{Expert}";
}
