using System.Text.Json;

namespace eMoE.Model;

/// <summary>The MoE architectures the engine runs (Hugging Face <c>model_type</c>).</summary>
public enum Architecture
{
    /// <summary><c>mixtral</c>: softmax router, top-k weights always renormalised.</summary>
    Mixtral,
    /// <summary><c>qwen3_moe</c>: per-head q/k RMSNorm, explicit head_dim, optional renormalisation.</summary>
    Qwen3Moe,
    /// <summary><c>olmoe</c>: q/k RMSNorm over the whole projected vector.</summary>
    Olmoe,
}

/// <summary>How queries and keys are normalised before RoPE.</summary>
public enum QkNormKind
{
    /// <summary>No q/k normalisation (Mixtral).</summary>
    None,
    /// <summary>RMSNorm over each head's head_dim values (Qwen3-MoE; weight [head_dim]).</summary>
    PerHead,
    /// <summary>RMSNorm over the whole projected vector (OLMoE; weight [heads * head_dim]).</summary>
    Whole,
}

/// <summary>
/// The flat configuration of a MoE transformer, read from a Hugging Face <c>config.json</c>.
/// Shapes in the rest of the engine are written in these names.
/// </summary>
public sealed record ModelConfig
{
    /// <summary>The architecture family.</summary>
    public required Architecture Architecture { get; init; }
    /// <summary>V: vocabulary size (rows of the embedding and LM head).</summary>
    public required int VocabSize { get; init; }
    /// <summary>H: hidden size.</summary>
    public required int HiddenSize { get; init; }
    /// <summary>I: intermediate size of one expert.</summary>
    public required int ExpertIntermediateSize { get; init; }
    /// <summary>L: number of transformer blocks.</summary>
    public required int NumLayers { get; init; }
    /// <summary>Number of query heads.</summary>
    public required int NumHeads { get; init; }
    /// <summary>Number of key/value heads (grouped-query attention when fewer than query heads).</summary>
    public required int NumKvHeads { get; init; }
    /// <summary>D: size of one attention head.</summary>
    public required int HeadDim { get; init; }
    /// <summary>E: experts per MoE layer.</summary>
    public required int NumExperts { get; init; }
    /// <summary>K: experts chosen per token.</summary>
    public required int TopK { get; init; }
    /// <summary>Whether the top-k router weights are renormalised to sum to one.</summary>
    public required bool NormTopKProb { get; init; }
    /// <summary>RoPE base.</summary>
    public required float RopeTheta { get; init; }
    /// <summary>RMSNorm epsilon.</summary>
    public required float RmsNormEps { get; init; }
    /// <summary>Whether the LM head reuses the embedding matrix.</summary>
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>Longest sequence the model was configured for.</summary>
    public required int MaxPositionEmbeddings { get; init; }
    /// <summary>Beginning-of-sequence token, if the config names one.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>End-of-sequence tokens (Hugging Face allows a list).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>How q and k are normalised before RoPE.</summary>
    public QkNormKind QkNorm { get; init; }

    /// <summary>Query projection width: heads x head_dim.</summary>
    public int QDim => NumHeads * HeadDim;
    /// <summary>Key/value projection width: kv heads x head_dim.</summary>
    public int KvDim => NumKvHeads * HeadDim;

    /// <summary>The supported <c>model_type</c> values, for error messages and docs.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = ["mixtral", "qwen3_moe", "olmoe"];

    /// <summary>Reads <c>config.json</c> from a model directory.</summary>
    /// <exception cref="ModelFormatException">The file is missing, malformed or describes an unsupported model.</exception>
    public static ModelConfig Load(string modelDirectory)
    {
        string path = Path.Combine(modelDirectory, "config.json");
        if (!File.Exists(path))
            throw new ModelFormatException($"{path}: not found (a Hugging Face model directory needs config.json)");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            return Parse(doc.RootElement, path);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException($"{path}: not valid JSON ({e.Message})", e);
        }
    }

    /// <summary>Parses a config.json root object; <paramref name="source"/> names it in errors.</summary>
    public static ModelConfig Parse(JsonElement root, string source)
    {
        var r = new ConfigReader(root, source);
        string modelType = r.String("model_type");
        Architecture arch = modelType switch
        {
            "mixtral" => Architecture.Mixtral,
            "qwen3_moe" => Architecture.Qwen3Moe,
            "olmoe" => Architecture.Olmoe,
            _ => throw new ModelFormatException(
                $"{source}: model_type '{modelType}' is not supported; supported: {string.Join(", ", SupportedModelTypes)}"),
        };

        int hidden = r.Int("hidden_size");
        int heads = r.Int("num_attention_heads");
        int numLayers = r.Int("num_hidden_layers");
        var config = new ModelConfig
        {
            Architecture = arch,
            VocabSize = r.Int("vocab_size"),
            HiddenSize = hidden,
            NumLayers = numLayers,
            NumHeads = heads,
            NumKvHeads = r.OptionalInt("num_key_value_heads") ?? heads,
            HeadDim = r.OptionalInt("head_dim") ?? (heads > 0 ? hidden / heads : 0),
            ExpertIntermediateSize = arch == Architecture.Qwen3Moe ? r.Int("moe_intermediate_size") : r.Int("intermediate_size"),
            NumExperts = arch == Architecture.Mixtral ? r.Int("num_local_experts") : r.Int("num_experts"),
            TopK = r.Int("num_experts_per_tok"),
            // Mixtral always renormalises its top-k weights; the others say so in the config.
            NormTopKProb = arch == Architecture.Mixtral || (r.OptionalBool("norm_topk_prob") ?? false),
            RopeTheta = (float)(r.OptionalDouble("rope_theta") ?? 10000.0),
            RmsNormEps = (float)(r.OptionalDouble("rms_norm_eps") ?? 1e-6),
            TieWordEmbeddings = r.OptionalBool("tie_word_embeddings") ?? false,
            MaxPositionEmbeddings = r.OptionalInt("max_position_embeddings") ?? 4096,
            BosTokenId = r.OptionalInt("bos_token_id"),
            EosTokenIds = r.IntOrIntList("eos_token_id"),
            QkNorm = arch switch
            {
                Architecture.Qwen3Moe => QkNormKind.PerHead,
                Architecture.Olmoe => QkNormKind.Whole,
                _ => QkNormKind.None,
            },
        };

        if (arch == Architecture.Qwen3Moe)
        {
            // Dense (non-MoE) blocks would need a separate MLP path that this engine does not have.
            int sparseStep = r.OptionalInt("decoder_sparse_step") ?? 1;
            var mlpOnly = r.IntOrIntList("mlp_only_layers");
            if (sparseStep != 1 || mlpOnly.Count > 0)
                throw new ModelFormatException($"{source}: qwen3_moe with dense layers (decoder_sparse_step != 1 or mlp_only_layers) is not supported");
        }
        if (arch == Architecture.Olmoe && r.OptionalDouble("clip_qkv") is not null)
            throw new ModelFormatException($"{source}: olmoe with clip_qkv is not supported");
        if (r.OptionalString("hidden_act") is { } act && act != "silu")
            throw new ModelFormatException($"{source}: hidden_act '{act}' is not supported (only silu)");
        if (r.HasObject("rope_scaling"))
            throw new ModelFormatException($"{source}: rope_scaling is not supported");

        config.Validate(source);
        return config;
    }

    private void Validate(string source)
    {
        void Positive(int value, string name)
        {
            if (value <= 0) throw new ModelFormatException($"{source}: {name} must be positive, got {value}");
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(ExpertIntermediateSize, "intermediate size");
        Positive(NumLayers, "num_hidden_layers");
        Positive(NumHeads, "num_attention_heads");
        Positive(NumKvHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        Positive(NumExperts, "number of experts");
        Positive(TopK, "num_experts_per_tok");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (NumHeads % NumKvHeads != 0)
            throw new ModelFormatException($"{source}: num_attention_heads {NumHeads} is not a multiple of num_key_value_heads {NumKvHeads}");
        if (HeadDim % 2 != 0)
            throw new ModelFormatException($"{source}: head_dim {HeadDim} must be even for RoPE");
        // The device kernels read rows four values at a time; every published MoE checkpoint qualifies.
        foreach (var (value, name) in new[] { (HiddenSize, "hidden_size"), (ExpertIntermediateSize, "intermediate size"), (HeadDim, "head_dim") })
        {
            if (value % 4 != 0) throw new ModelFormatException($"{source}: {name} {value} must be a multiple of 4");
        }
        if (TopK > NumExperts)
            throw new ModelFormatException($"{source}: num_experts_per_tok {TopK} exceeds the number of experts {NumExperts}");
        if (!(RmsNormEps > 0) || !(RopeTheta > 0))
            throw new ModelFormatException($"{source}: rms_norm_eps and rope_theta must be positive");
    }

    /// <summary>Typed access to config.json fields with errors that name the file and the field.</summary>
    private readonly struct ConfigReader(JsonElement root, string source)
    {
        private JsonElement? Get(string name) =>
            root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        public string String(string name) =>
            OptionalString(name) ?? throw new ModelFormatException($"{source}: missing field '{name}'");

        public string? OptionalString(string name) => Get(name) switch
        {
            null => null,
            { ValueKind: JsonValueKind.String } v => v.GetString(),
            _ => throw new ModelFormatException($"{source}: field '{name}' must be a string"),
        };

        public int Int(string name) =>
            OptionalInt(name) ?? throw new ModelFormatException($"{source}: missing field '{name}'");

        public int? OptionalInt(string name) => Get(name) switch
        {
            null => null,
            { ValueKind: JsonValueKind.Number } v when v.TryGetInt32(out int i) => i,
            _ => throw new ModelFormatException($"{source}: field '{name}' must be an integer"),
        };

        public double? OptionalDouble(string name) => Get(name) switch
        {
            null => null,
            { ValueKind: JsonValueKind.Number } v => v.GetDouble(),
            _ => throw new ModelFormatException($"{source}: field '{name}' must be a number"),
        };

        public bool? OptionalBool(string name) => Get(name) switch
        {
            null => null,
            { ValueKind: JsonValueKind.True } => true,
            { ValueKind: JsonValueKind.False } => false,
            _ => throw new ModelFormatException($"{source}: field '{name}' must be true or false"),
        };

        private int[] IntList(JsonElement array, string name)
        {
            var result = new List<int>();
            foreach (var e in array.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int i))
                    throw new ModelFormatException($"{source}: field '{name}' must hold integers");
                result.Add(i);
            }
            return [.. result];
        }

        public bool HasObject(string name) => Get(name) is { ValueKind: JsonValueKind.Object };

        public IReadOnlyList<int> IntOrIntList(string name) => Get(name) switch
        {
            null => [],
            { ValueKind: JsonValueKind.Number } => [Int(name)],
            { ValueKind: JsonValueKind.Array } v => IntList(v, name),
            _ => throw new ModelFormatException($"{source}: field '{name}' must be an integer or a list of integers"),
        };
    }
}
