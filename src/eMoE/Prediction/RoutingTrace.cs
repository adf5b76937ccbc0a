using System.Text.Json;
using System.Text.Json.Serialization;

namespace eMoE.Prediction;

/// <summary>
/// The routing of one forward step (a prefill chunk or one decoded token): for each layer, the k
/// experts chosen for each token and their router weights, token-major ([T * K], rank order).
/// </summary>
public sealed class StepTrace
{
    /// <summary>Position of the step's first token.</summary>
    [JsonPropertyName("start")] public int Start { get; init; }
    /// <summary>Tokens in the step.</summary>
    [JsonPropertyName("tokens")] public int Tokens { get; init; }
    /// <summary>
    /// The engine step this slice of the prompt ran in (the same number on every request that shared
    /// the step: what a batch loaded at once); null in traces recorded one request at a time.
    /// </summary>
    [JsonPropertyName("engine_step")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? EngineStep { get; init; }
    /// <summary>[layer][t * K + j]: expert of rank j for token t.</summary>
    [JsonPropertyName("experts")] public int[][] Experts { get; init; } = [];
    /// <summary>[layer][t * K + j]: its router weight (after renormalisation where the model does it).</summary>
    [JsonPropertyName("weights")] public float[][] Weights { get; init; } = [];
}

/// <summary>
/// The routing trace of one prompt: every step from prefill to the last decoded token. Written as
/// one JSON object per line (JSON Lines), so a file holds a stream of requests in arrival order.
/// </summary>
public sealed class PromptTrace
{
    /// <summary>Index of the prompt in its stream.</summary>
    [JsonPropertyName("prompt")] public int Prompt { get; set; }
    /// <summary>Task label of the request, if any.</summary>
    [JsonPropertyName("task")] public string? Task { get; set; }
    /// <summary>MoE layers.</summary>
    [JsonPropertyName("num_layers")] public int NumLayers { get; init; }
    /// <summary>Experts per layer.</summary>
    [JsonPropertyName("num_experts")] public int NumExperts { get; init; }
    /// <summary>Experts chosen per token.</summary>
    [JsonPropertyName("top_k")] public int TopK { get; init; }
    /// <summary>The steps in order.</summary>
    [JsonPropertyName("steps")] public List<StepTrace> Steps { get; init; } = [];

    /// <summary>The same prompt (index, task, shape) with other steps: a part of it, or a prefix.</summary>
    public PromptTrace WithSteps(IEnumerable<StepTrace> steps) => new()
    {
        Prompt = Prompt, Task = Task, NumLayers = NumLayers, NumExperts = NumExperts, TopK = TopK, Steps = [.. steps],
    };

    /// <summary>Appends this trace as one line to a JSON Lines writer.</summary>
    public void WriteLine(TextWriter writer) => writer.WriteLine(JsonSerializer.Serialize(this));

    /// <summary>Reads every prompt trace of a JSON Lines file.</summary>
    public static List<PromptTrace> ReadAll(string path)
    {
        var result = new List<PromptTrace>();
        int line = 0;
        foreach (string text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            try
            {
                result.Add(JsonSerializer.Deserialize<PromptTrace>(text) ?? throw new JsonException("empty record"));
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{path}:{line}: not a routing trace record ({e.Message})", e);
            }
        }
        return result;
    }
}

/// <summary>Sees the routing of every layer of every step the forward pass runs.</summary>
internal interface IRoutingObserver
{
    /// <summary>A step of <paramref name="tokens"/> tokens starting at <paramref name="start"/> begins (engine step <paramref name="engineStep"/>).</summary>
    void BeginStep(int start, int tokens, long engineStep);

    /// <summary>Layer <paramref name="layer"/> routed the step's tokens: ids and weights [T * K].</summary>
    void OnRouting(int layer, ReadOnlySpan<int> expertIds, ReadOnlySpan<float> weights);
}

/// <summary>Records the steps of one prompt into a <see cref="PromptTrace"/>.</summary>
internal sealed class TraceRecorder(int numLayers, int numExperts, int topK) : IRoutingObserver
{
    private StepTrace? _step;

    public PromptTrace Trace { get; } = new() { NumLayers = numLayers, NumExperts = numExperts, TopK = topK };

    public void BeginStep(int start, int tokens, long engineStep)
    {
        _step = new StepTrace { Start = start, Tokens = tokens, EngineStep = engineStep, Experts = new int[numLayers][], Weights = new float[numLayers][] };
        Trace.Steps.Add(_step);
    }

    public void OnRouting(int layer, ReadOnlySpan<int> expertIds, ReadOnlySpan<float> weights)
    {
        _step!.Experts[layer] = expertIds.ToArray();
        _step.Weights[layer] = weights.ToArray();
    }
}
