using System.Text;

namespace eMoE.Model;

/// <summary>
/// A Hugging Face tokenizer loaded from a model directory's <c>tokenizer.json</c> (and
/// <c>tokenizer_config.json</c> when present). Supports byte-level BPE (GPT-2, Qwen, Llama 3 style) and
/// SentencePiece-style BPE with byte fallback (Mistral, Llama 2 style) and produces the same ids as
/// Hugging Face's tokenizers library. Immutable once loaded; Encode and Decode are thread-safe.
/// </summary>
public sealed class MoeTokenizer
{
    private readonly string?[] _tokens;
    private readonly bool[] _special;
    private readonly bool[] _skipped;
    private readonly AddedTokenSplitter _splitter;
    private readonly SegmentEncoder _encoder;
    private readonly SpecialTokenTemplate _template;
    private readonly TokenizerDefinition _definition;

    private MoeTokenizer(TokenizerDefinition definition, TokenizerConfig config, string file)
    {
        _definition = definition;
        var model = definition.Model;
        int size = 0;
        foreach (int id in model.Vocab.Values)
        {
            size = Math.Max(size, id + 1);
        }

        foreach (var added in definition.AddedTokens)
        {
            if (added.Id < 0)
            {
                throw new ModelFormatException($"{file}: added token '{added.Content}' has the negative id {added.Id}");
            }

            size = Math.Max(size, added.Id + 1);
        }

        _tokens = new string?[size];
        _special = new bool[size];
        _skipped = new bool[size];
        foreach (var (token, id) in model.Vocab)
        {
            if (id < 0)
            {
                throw new ModelFormatException($"{file}: token '{token}' has the negative id {id}");
            }

            _tokens[id] = token;
        }

        // HF matches added tokens twice: those with normalized=false in the raw input, the others in
        // each normalized segment, where their content has been normalized the same way (and that
        // normalized content is also their token string, e.g. "▁<|im_start|>" after Prepend).
        var normalizer = new TextNormalizer(definition.Normalizer);
        foreach (var added in definition.AddedTokens)
        {
            _tokens[added.Id] = added.Normalized ? normalizer.Normalize(added.Content) : added.Content;
            _special[added.Id] = added.Special;
            // HF skips a special token in Decode by looking its token string up among the special
            // contents, so one whose normalized string differs (a normalized special token) stays in.
            _skipped[added.Id] = added.Special && _tokens[added.Id] == added.Content;
        }

        _splitter = new AddedTokenSplitter(definition.AddedTokens.Where(t => !t.Normalized));
        var normalizedTokens = new AddedTokenSplitter(definition.AddedTokens.Where(t => t.Normalized)
            .Select(t => t with { Content = normalizer.Normalize(t.Content) }));
        IBpeModel bpe = (IBpeModel?)MlBpeModel.TryCreate(model) ?? new BytePairModel(model, file);
        _encoder = new SegmentEncoder(normalizer, normalizedTokens, new PreTokenizer(definition.PreTokenizer), bpe);

        BosTokenId = Lookup(config.BosToken);
        EosTokenId = Lookup(config.EosToken);
        // The post-processor is what HF's tokenizers library runs for add_special_tokens; the config's
        // add_bos_token / add_eos_token only stand in when the file has no template.
        _template = definition.Template ?? new SpecialTokenTemplate(
            config.AddBosToken && BosTokenId is { } bos ? [bos] : [],
            config.AddEosToken && EosTokenId is { } eos ? [eos] : []);
    }

    /// <summary>Highest token id plus one, over the model vocabulary and the added tokens.</summary>
    public int VocabSize => _tokens.Length;

    /// <summary>The beginning-of-sequence token named by tokenizer_config.json, if any.</summary>
    public int? BosTokenId { get; }

    /// <summary>The end-of-sequence token named by tokenizer_config.json, if any.</summary>
    public int? EosTokenId { get; }

    /// <summary>
    /// Loads <c>tokenizer.json</c> (and <c>tokenizer_config.json</c> if present) from
    /// <paramref name="modelDirectory"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException">The directory has no tokenizer.json.</exception>
    /// <exception cref="ModelFormatException">A file is malformed or uses an unsupported component.</exception>
    public static MoeTokenizer Load(string modelDirectory)
    {
        string file = Path.Combine(modelDirectory, "tokenizer.json");
        if (!File.Exists(file))
        {
            throw new FileNotFoundException($"{file} does not exist", file);
        }

        var definition = TokenizerJsonReader.Read(file);
        string configFile = Path.Combine(modelDirectory, "tokenizer_config.json");
        var config = File.Exists(configFile) ? TokenizerConfig.Read(configFile) : TokenizerConfig.Empty;
        return new MoeTokenizer(definition, config, file);
    }

    /// <summary>
    /// Encodes <paramref name="text"/>. Added tokens written literally in the text become their single
    /// ids. With <paramref name="addSpecialTokens"/>, the tokens of the file's post-processor template
    /// (or of tokenizer_config.json's add_bos_token / add_eos_token) are added around the sequence.
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addSpecialTokens)
        {
            ids.AddRange(_template.Prefix);
        }

        foreach (var segment in _splitter.Split(text))
        {
            if (segment.IsToken)
            {
                ids.Add(segment.TokenId);
            }
            else
            {
                _encoder.Encode(text.Substring(segment.Start, segment.Length), segment.Start == 0, ids);
            }
        }

        if (addSpecialTokens)
        {
            ids.AddRange(_template.Suffix);
        }

        return ids;
    }

    /// <summary>
    /// Decodes <paramref name="ids"/> as Hugging Face does. Unknown ids are skipped; invalid or
    /// incomplete UTF-8 becomes U+FFFD.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = true)
    {
        var state = CreateDecodeState();
        var text = new StringBuilder(ids.Length * 4);
        foreach (int id in ids)
        {
            if (TokenForDecode(id, skipSpecialTokens) is { } token)
            {
                state.Append(token, text);
            }
        }

        state.Flush(text);
        return text.ToString();
    }

    /// <summary>Whether <paramref name="id"/> is an added token marked special (such as BOS or EOS).</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)_special.Length && _special[id];

    /// <summary>The token's vocabulary string (byte-level or "▁" form), or null for an unknown id.</summary>
    public string? TokenToString(int id) => (uint)id < (uint)_tokens.Length ? _tokens[id] : null;

    /// <summary>Starts an incremental decode for streaming generation.</summary>
    /// <param name="skipSpecialTokens">Whether special tokens are left out of the text, as in <see cref="Decode"/>.</param>
    public TokenStreamDecoder CreateStreamDecoder(bool skipSpecialTokens = true) => new(this, skipSpecialTokens);

    internal DecodeState CreateDecodeState() => _definition.ByteLevelDecoder
        ? new ByteLevelDecodeState()
        : new SentencePieceDecodeState(_definition.DecoderSteps);

    internal string? TokenForDecode(int id, bool skipSpecialTokens) =>
        skipSpecialTokens && (uint)id < (uint)_skipped.Length && _skipped[id] ? null : TokenToString(id);

    private int? Lookup(string? token)
    {
        if (token is null)
        {
            return null;
        }

        foreach (var added in _definition.AddedTokens)
        {
            if (added.Content == token)
            {
                return added.Id;
            }
        }

        return _definition.Model.Vocab.TryGetValue(token, out int id) ? id : null;
    }
}
