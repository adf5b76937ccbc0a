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
    private readonly StopSequenceFilter? _stops;

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
        _stops = options.StopSequences is { Count: > 0 } stops ? new StopSequenceFilter(stops) : null;
    }

    /// <summary>
    /// Text still held back at the end: an incomplete byte sequence, or the start of a stop sequence
    /// that did not complete. Empty after a stop sequence.
    /// </summary>
    public string FlushText()
    {
        string tail = _decoder.Flush();
        return _stops is null ? tail : _stops.Append(tail) + _stops.Flush();
    }

    /// <inheritdoc/>
    public async IAsyncEnumerator<GeneratedToken> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        await foreach (int id in _model.GenerateIdsAsync(_promptIds, _options, Stats, cancellationToken).ConfigureAwait(false))
        {
            string text = _decoder.Append(id);
            if (_stops is null)
            {
                yield return new GeneratedToken(id, text);
                continue;
            }
            text = _stops.Append(text);
            if (_stops.Stopped)
            {
                // Leaving the enumeration ends the request (its KV blocks are freed within a step).
                Stats.FinishReason = FinishReason.StopSequence;
                if (text.Length > 0) yield return new GeneratedToken(id, text);
                yield break;
            }
            yield return new GeneratedToken(id, text);
        }
    }
}
