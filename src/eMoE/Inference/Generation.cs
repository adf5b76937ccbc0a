using eMoE.Model;

namespace eMoE.Inference;

/// <summary>One generated token and the text it completes (may be empty while a UTF-8 sequence is incomplete).</summary>
/// <param name="Id">Token id.</param>
/// <param name="Text">Newly completed text.</param>
public readonly record struct GeneratedToken(int Id, string Text);

/// <summary>
/// A running text generation: enumerate it to stream tokens; <see cref="Stats"/> fills in as it
/// runs and <see cref="FlushText"/> returns any text held back at the end.
/// </summary>
public sealed class Generation : IAsyncEnumerable<GeneratedToken>
{
    private readonly MoeModel _model;
    private readonly IReadOnlyList<int> _promptIds;
    private readonly GenerationOptions _options;
    private readonly TokenStreamDecoder _decoder;

    /// <summary>Counts and timings, updated as tokens are produced.</summary>
    public GenerationStats Stats { get; } = new();

    /// <summary>The prompt's token ids (with special tokens if requested).</summary>
    public IReadOnlyList<int> PromptIds => _promptIds;

    internal Generation(MoeModel model, MoeTokenizer tokenizer, IReadOnlyList<int> promptIds, GenerationOptions options)
    {
        _model = model;
        _promptIds = promptIds;
        _options = options;
        _decoder = tokenizer.CreateStreamDecoder();
    }

    /// <summary>Text still held back by the stream decoder (an incomplete byte sequence at the end).</summary>
    public string FlushText() => _decoder.Flush();

    /// <inheritdoc/>
    public async IAsyncEnumerator<GeneratedToken> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        await foreach (int id in _model.GenerateIdsAsync(_promptIds, _options, Stats, cancellationToken).ConfigureAwait(false))
            yield return new GeneratedToken(id, _decoder.Append(id));
    }
}
