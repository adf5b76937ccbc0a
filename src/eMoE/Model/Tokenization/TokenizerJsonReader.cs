using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace eMoE.Model;

/// <summary>
/// Parses a Hugging Face <c>tokenizer.json</c> into a <see cref="TokenizerDefinition"/>. Only the
/// components eMoE implements exactly are accepted; anything else fails here, naming the file and the
/// item, rather than silently tokenizing differently from Hugging Face.
/// </summary>
internal sealed class TokenizerJsonReader
{
    private readonly string _file;

    private TokenizerJsonReader(string file) => _file = file;

    /// <summary>Reads and validates <paramref name="path"/>.</summary>
    public static TokenizerDefinition Read(string path)
    {
        var reader = new TokenizerJsonReader(path);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return reader.Parse(doc.RootElement);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: malformed JSON: {e.Message}", e);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException
                                       or IndexOutOfRangeException or ArgumentException)
        {
            // JsonElement accessors throw these when a field has the wrong kind.
            throw new ModelFormatException($"{path}: unexpected content: {e.Message}", e);
        }
    }

    private TokenizerDefinition Parse(JsonElement root)
    {
        var model = ParseModel(Required(root, "model", "model"));
        var added = new List<AddedTokenDefinition>();
        if (root.TryGetProperty("added_tokens", out var addedTokens) && addedTokens.ValueKind == JsonValueKind.Array)
        {
            foreach (var t in addedTokens.EnumerateArray())
            {
                added.Add(new AddedTokenDefinition(
                    t.GetProperty("id").GetInt32(),
                    t.GetProperty("content").GetString() ?? "",
                    Flag(t, "special"), Flag(t, "lstrip"), Flag(t, "rstrip"), Flag(t, "single_word"), Flag(t, "normalized")));
            }
        }

        var normalizer = new List<NormalizerStep>();
        if (root.TryGetProperty("normalizer", out var n))
        {
            AddNormalizer(n, normalizer);
        }

        var preTokenizer = new List<PreTokenizerStep>();
        if (root.TryGetProperty("pre_tokenizer", out var p))
        {
            AddPreTokenizer(p, preTokenizer);
        }

        var decoderSteps = new List<DecoderStep>();
        bool byteLevelDecoder = ParseDecoder(Required(root, "decoder", "decoder"), decoderSteps);

        SpecialTokenTemplate? template = null;
        if (root.TryGetProperty("post_processor", out var post))
        {
            template = ParsePostProcessor(post, added);
        }

        bool byteLevelPre = preTokenizer.Any(s => s is ByteLevelStep);
        if (byteLevelPre != byteLevelDecoder)
        {
            throw Unsupported("a ByteLevel pre-tokenizer without a ByteLevel decoder (or the reverse)");
        }

        return new TokenizerDefinition
        {
            Model = model,
            AddedTokens = added,
            Normalizer = normalizer,
            PreTokenizer = preTokenizer,
            ByteLevelDecoder = byteLevelDecoder,
            DecoderSteps = decoderSteps,
            Template = template,
        };
    }

    private BpeModelDefinition ParseModel(JsonElement model)
    {
        string type = model.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "BPE";
        if (type != "BPE")
        {
            throw Unsupported($"model type '{type}' (only BPE is implemented)");
        }

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in Required(model, "vocab", "model.vocab").EnumerateObject())
        {
            vocab[entry.Name] = entry.Value.GetInt32();
        }

        var merges = new List<(string, string)>();
        foreach (var m in Required(model, "merges", "model.merges").EnumerateArray())
        {
            (string, string) pair;
            if (m.ValueKind == JsonValueKind.String)
            {
                // The older "a b" form; like HF, exactly one space must separate the two parts.
                string[] parts = (m.GetString() ?? "").Split(' ');
                if (parts.Length != 2)
                {
                    throw new ModelFormatException($"{_file}: merge '{m.GetString()}' is not two space-separated tokens");
                }

                pair = (parts[0], parts[1]);
            }
            else
            {
                pair = (m[0].GetString() ?? "", m[1].GetString() ?? "");
            }

            if (!vocab.ContainsKey(pair.Item1) || !vocab.ContainsKey(pair.Item2) || !vocab.ContainsKey(pair.Item1 + pair.Item2))
            {
                throw new ModelFormatException($"{_file}: merge '{pair.Item1} {pair.Item2}' uses a token missing from model.vocab");
            }

            merges.Add(pair);
        }

        // BPE dropout is a training-time regularizer; inference wants deterministic ids, so it is ignored.
        return new BpeModelDefinition
        {
            Vocab = vocab,
            Merges = merges,
            UnknownToken = OptionalString(model, "unk_token"),
            FuseUnknown = Flag(model, "fuse_unk"),
            ByteFallback = Flag(model, "byte_fallback"),
            IgnoreMerges = Flag(model, "ignore_merges"),
            ContinuingSubwordPrefix = NullIfEmpty(OptionalString(model, "continuing_subword_prefix")),
            EndOfWordSuffix = NullIfEmpty(OptionalString(model, "end_of_word_suffix")),
        };
    }

    private void AddNormalizer(JsonElement n, List<NormalizerStep> steps)
    {
        if (n.ValueKind == JsonValueKind.Null)
        {
            return;
        }

        string type = TypeOf(n, "normalizer");
        switch (type)
        {
            case "Sequence":
                foreach (var inner in n.GetProperty("normalizers").EnumerateArray())
                {
                    AddNormalizer(inner, steps);
                }

                break;
            case "Prepend":
                steps.Add(new PrependStep(n.GetProperty("prepend").GetString() ?? ""));
                break;
            case "Replace":
                steps.Add(new ReplaceStep(Pattern(n.GetProperty("pattern")), n.GetProperty("content").GetString() ?? ""));
                break;
            case "NFC":
                steps.Add(new UnicodeFormStep(NormalizationForm.FormC));
                break;
            case "NFD":
                steps.Add(new UnicodeFormStep(NormalizationForm.FormD));
                break;
            case "NFKC":
                steps.Add(new UnicodeFormStep(NormalizationForm.FormKC));
                break;
            case "NFKD":
                steps.Add(new UnicodeFormStep(NormalizationForm.FormKD));
                break;
            default:
                throw Unsupported($"normalizer '{type}'");
        }
    }

    private void AddPreTokenizer(JsonElement p, List<PreTokenizerStep> steps)
    {
        if (p.ValueKind == JsonValueKind.Null)
        {
            return;
        }

        string type = TypeOf(p, "pre_tokenizer");
        switch (type)
        {
            case "Sequence":
                foreach (var inner in p.GetProperty("pretokenizers").EnumerateArray())
                {
                    AddPreTokenizer(inner, steps);
                }

                break;
            case "Split":
                string behavior = p.GetProperty("behavior").GetString() ?? "";
                if ((behavior != "Isolated" && behavior != "Removed") || Flag(p, "invert"))
                {
                    throw Unsupported($"pre_tokenizer Split with behavior '{behavior}'{(Flag(p, "invert") ? " and invert" : "")}");
                }

                steps.Add(new SplitStep(Pattern(p.GetProperty("pattern")), behavior == "Removed"));
                break;
            case "ByteLevel":
                steps.Add(new ByteLevelStep(Flag(p, "add_prefix_space"), Flag(p, "use_regex", true)));
                break;
            case "Metaspace":
                steps.Add(new MetaspaceStep(Replacement(p), MetaspaceScheme(p), Flag(p, "split", true)));
                break;
            default:
                throw Unsupported($"pre_tokenizer '{type}'");
        }
    }

    /// <returns>True for a ByteLevel decoder; otherwise the SentencePiece-style steps were added.</returns>
    private bool ParseDecoder(JsonElement d, List<DecoderStep> steps)
    {
        if (d.ValueKind == JsonValueKind.Null)
        {
            throw Unsupported("a missing decoder");
        }

        string type = TypeOf(d, "decoder");
        if (type == "ByteLevel")
        {
            return true;
        }

        var list = type == "Sequence" ? d.GetProperty("decoders").EnumerateArray().ToList() : [d];
        if (list.Count == 1 && TypeOf(list[0], "decoder") == "ByteLevel")
        {
            return true;
        }

        // The streaming decoder relies on this order: per-token rewrites, then byte grouping, then
        // concatenation, then stripping the start of the whole text.
        int phase = 0;
        foreach (var step in list)
        {
            string stepType = TypeOf(step, "decoder");
            (int stepPhase, DecoderStep parsed) = stepType switch
            {
                "Replace" => (0, (DecoderStep)new ReplaceDecoderStep(LiteralPattern(step.GetProperty("pattern"), "decoder Replace"), step.GetProperty("content").GetString() ?? "")),
                "Metaspace" => (0, new MetaspaceDecoderStep(Replacement(step), MetaspaceScheme(step) != MetaspacePrepend.Never)),
                "ByteFallback" => (1, new ByteFallbackDecoderStep()),
                "Fuse" => (2, new FuseDecoderStep()),
                "Strip" => (3, ParseStrip(step)),
                _ => throw Unsupported($"decoder '{stepType}'"),
            };
            if (stepPhase < phase || (stepPhase == 3 && phase != 2))
            {
                throw Unsupported($"decoder '{stepType}' in this position of the decoder sequence");
            }

            phase = stepPhase;
            steps.Add(parsed);
        }

        return false;
    }

    private StripDecoderStep ParseStrip(JsonElement step)
    {
        string content = step.GetProperty("content").GetString() ?? "";
        int stop = step.GetProperty("stop").GetInt32();
        if (content.Length != 1 || stop != 0)
        {
            throw Unsupported("decoder Strip other than of leading characters");
        }

        return new StripDecoderStep(content[0], step.GetProperty("start").GetInt32());
    }

    private SpecialTokenTemplate? ParsePostProcessor(JsonElement post, List<AddedTokenDefinition> added)
    {
        if (post.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        string type = TypeOf(post, "post_processor");
        switch (type)
        {
            case "ByteLevel":
                return null;
            case "Sequence":
                SpecialTokenTemplate? found = null;
                foreach (var inner in post.GetProperty("processors").EnumerateArray())
                {
                    found = ParsePostProcessor(inner, added) ?? found;
                }

                return found;
            case "TemplateProcessing":
                return ParseTemplate(post);
            default:
                throw Unsupported($"post_processor '{type}'");
        }
    }

    private SpecialTokenTemplate ParseTemplate(JsonElement post)
    {
        var specials = post.GetProperty("special_tokens");
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (var item in post.GetProperty("single").EnumerateArray())
        {
            if (item.TryGetProperty("Sequence", out _))
            {
                seenSequence = true;
                continue;
            }

            string id = item.GetProperty("SpecialToken").GetProperty("id").GetString() ?? "";
            if (!specials.TryGetProperty(id, out var special))
            {
                throw new ModelFormatException($"{_file}: post_processor template names '{id}', which is not in its special_tokens");
            }

            (seenSequence ? suffix : prefix).AddRange(special.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()));
        }

        return new SpecialTokenTemplate([.. prefix], [.. suffix]);
    }

    private Regex Pattern(JsonElement pattern)
    {
        if (pattern.TryGetProperty("Regex", out var regex))
        {
            // Oniguruma and .NET agree on the constructs HF tokenizers use (\p{L}, \p{N}, (?i:), lookahead).
            return new Regex(regex.GetString() ?? "", RegexOptions.CultureInvariant | RegexOptions.Compiled);
        }

        return new Regex(Regex.Escape(pattern.GetProperty("String").GetString() ?? ""), RegexOptions.CultureInvariant);
    }

    private string LiteralPattern(JsonElement pattern, string where)
    {
        if (!pattern.TryGetProperty("String", out var s))
        {
            throw Unsupported($"{where} with a regex pattern");
        }

        return s.GetString() ?? "";
    }

    private char Replacement(JsonElement e)
    {
        string r = e.TryGetProperty("replacement", out var v) ? v.GetString() ?? "" : "\u2581";
        if (r.Length != 1)
        {
            throw Unsupported($"Metaspace replacement '{r}' (one UTF-16 character expected)");
        }

        return r[0];
    }

    private MetaspacePrepend MetaspaceScheme(JsonElement e)
    {
        if (e.TryGetProperty("prepend_scheme", out var scheme))
        {
            return scheme.GetString() switch
            {
                "always" => MetaspacePrepend.Always,
                "first" => MetaspacePrepend.First,
                "never" => MetaspacePrepend.Never,
                var other => throw Unsupported($"Metaspace prepend_scheme '{other}'"),
            };
        }

        // Files older than prepend_scheme carry add_prefix_space instead.
        return Flag(e, "add_prefix_space", true) ? MetaspacePrepend.Always : MetaspacePrepend.Never;
    }

    private JsonElement Required(JsonElement e, string name, string path)
    {
        if (!e.TryGetProperty(name, out var v))
        {
            throw new ModelFormatException($"{_file}: '{path}' is missing");
        }

        return v;
    }

    private string TypeOf(JsonElement e, string what)
    {
        if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("type", out var t))
        {
            throw new ModelFormatException($"{_file}: {what} has no 'type'");
        }

        return t.GetString() ?? "";
    }

    private static bool Flag(JsonElement e, string name, bool fallback = false) =>
        e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    private static string? OptionalString(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    private ModelFormatException Unsupported(string item) =>
        new($"{_file}: unsupported {item}");
}
