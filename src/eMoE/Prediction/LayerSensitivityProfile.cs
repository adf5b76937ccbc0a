using System.Text.Json;
using System.Text.Json.Serialization;

namespace eMoE.Prediction;

/// <summary>How much one layer's routing matters for one task.</summary>
public sealed class LayerSensitivity
{
    /// <summary>The MoE layer.</summary>
    [JsonPropertyName("layer")] public int Layer { get; init; }
    /// <summary>Perplexity with this layer's tokens sent to random experts.</summary>
    [JsonPropertyName("randomized_perplexity")] public double RandomizedPerplexity { get; init; }
    /// <summary>Relative perplexity increase over the intact model (0.1 = +10%).</summary>
    [JsonPropertyName("increase")] public double Increase { get; init; }
    /// <summary>Whether the increase reached the profile's threshold: the layer's routing matters.</summary>
    [JsonPropertyName("sensitive")] public bool Sensitive { get; init; }
}

/// <summary>One task's profile.</summary>
public sealed class TaskSensitivity
{
    /// <summary>Tokens scored.</summary>
    [JsonPropertyName("tokens")] public long Tokens { get; init; }
    /// <summary>Perplexity of the intact model.</summary>
    [JsonPropertyName("perplexity")] public double Perplexity { get; init; }
    /// <summary>Per layer, in order.</summary>
    [JsonPropertyName("layers")] public List<LayerSensitivity> Layers { get; init; } = [];
}

/// <summary>
/// eMoE's offline task profile: for each task and MoE layer, how much quality drops when that
/// layer's routing is randomised (each token sent to k random experts with its router weights).
/// Layers whose perplexity rises by less than <see cref="Threshold"/> are insensitive: the engine
/// skips prediction there; in reroute mode the increases also weigh how slots are shared out. Written by <c>emoe profile</c>; a JSON file the engine loads.
/// </summary>
public sealed class LayerSensitivityProfile
{
    /// <summary>The model directory profiled.</summary>
    [JsonPropertyName("model")] public string Model { get; init; } = "";
    /// <summary>Relative perplexity increase at or above which a layer counts as sensitive.</summary>
    [JsonPropertyName("threshold")] public double Threshold { get; init; }
    /// <summary>MoE layers of the model.</summary>
    [JsonPropertyName("num_layers")] public int NumLayers { get; init; }
    /// <summary>Per task label.</summary>
    [JsonPropertyName("tasks")] public Dictionary<string, TaskSensitivity> Tasks { get; init; } = [];

    /// <summary>
    /// Whether <paramref name="layer"/>'s routing matters for <paramref name="task"/>; unprofiled
    /// tasks and layers are sensitive (prediction is never skipped without evidence).
    /// </summary>
    public bool IsSensitive(string? task, int layer) => Find(task, layer)?.Sensitive ?? true;

    /// <summary>
    /// How much a missing expert of <paramref name="layer"/> costs <paramref name="task"/>, relative to
    /// other layers: the perplexity increase with the layer's routing randomised; null when unprofiled.
    /// </summary>
    public double? Weight(string? task, int layer) => Find(task, layer)?.Increase;

    private LayerSensitivity? Find(string? task, int layer) =>
        task is not null && Tasks.TryGetValue(task, out var t) ? t.Layers.FirstOrDefault(l => l.Layer == layer) : null;

    /// <summary>Writes the profile as indented JSON.</summary>
    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>Reads and checks a profile.</summary>
    /// <exception cref="InvalidDataException">The file is not a valid profile.</exception>
    public static LayerSensitivityProfile Load(string path)
    {
        LayerSensitivityProfile profile;
        try
        {
            profile = JsonSerializer.Deserialize<LayerSensitivityProfile>(File.ReadAllText(path)) ?? throw new JsonException("empty document");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not a layer sensitivity profile ({e.Message})", e);
        }
        if (profile.NumLayers <= 0) throw new InvalidDataException($"{path}: num_layers must be positive");
        foreach (var (task, t) in profile.Tasks)
        {
            if (t is null) throw new InvalidDataException($"{path}: task '{task}' has no profile");
            foreach (var l in t.Layers)
            {
                if (l.Layer < 0 || l.Layer >= profile.NumLayers)
                    throw new InvalidDataException($"{path}: task '{task}' names layer {l.Layer}; the model has {profile.NumLayers}");
            }
        }
        return profile;
    }
}

/// <summary>Measures a <see cref="LayerSensitivityProfile"/> on a model (eMoE's offline profiling).</summary>
public static class LayerProfiler
{
    /// <summary>
    /// For each task's tokens: perplexity of the intact model, then with each layer's routing
    /// randomised in turn (windows of <paramref name="context"/> tokens, random experts from
    /// <paramref name="seed"/>). A layer is sensitive when its increase reaches <paramref name="threshold"/>.
    /// </summary>
    public static LayerSensitivityProfile Measure(Inference.MoeModel model, IReadOnlyDictionary<string, IReadOnlyList<int>> tokensByTask,
        double threshold, int context = 256, int seed = 0, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokensByTask);
        if (!(threshold >= 0)) throw new ArgumentOutOfRangeException(nameof(threshold), "the threshold is a relative perplexity increase, >= 0");
        var tasks = new Dictionary<string, TaskSensitivity>(StringComparer.Ordinal);
        foreach (var (task, ids) in tokensByTask)
        {
            var intact = model.ScorePerplexity(ids, new Inference.PerplexityOptions { Context = context }, cancellationToken);
            var layers = new List<LayerSensitivity>();
            for (int l = 0; l < model.Config.NumLayers; l++)
            {
                var randomized = model.ScorePerplexity(ids, new Inference.PerplexityOptions { Context = context, RandomRoutingLayer = l, Seed = seed }, cancellationToken);
                double increase = randomized.Perplexity / intact.Perplexity - 1;
                layers.Add(new LayerSensitivity { Layer = l, RandomizedPerplexity = randomized.Perplexity, Increase = increase, Sensitive = increase >= threshold });
                progress?.Report($"{task} layer {l}: perplexity {intact.Perplexity:0.00} -> {randomized.Perplexity:0.00} ({increase:+0.0%;-0.0%})");
            }
            tasks[task] = new TaskSensitivity { Tokens = intact.Tokens, Perplexity = intact.Perplexity, Layers = layers };
        }
        return new LayerSensitivityProfile { Model = model.Directory, Threshold = threshold, NumLayers = model.Config.NumLayers, Tasks = tasks };
    }
}
