using System.Globalization;
using eMoE.Model;

namespace eMoE.Prediction;

/// <summary>
/// Fitted pre-gates. The training-free pre-gate applies layer L+1's router to layer L's MoE input;
/// Pre-gated MoE instead fine-tunes a gate for it. This is the cheap form of that: for each layer
/// L+1 ≥ 1, a linear gate (weight [E, H], bias [E]) on layer L's MoE input, fitted in closed form
/// (ridge regression) to layer L+1's router logits on routing traces, and pulled toward layer L+1's
/// own router so that little data cannot move it far from the training-free gate. Same cost as the
/// training-free pre-gate: one [E, H] projection per token and layer.
/// </summary>
public sealed class FittedPregate
{
    private readonly float[][] _weights; // [L][E * H], row-major [E, H]; [0] is empty (layer 0 has no pre-gate)
    private readonly float[][] _biases;  // [L][E]

    /// <summary>MoE layers of the model the gates were fitted for.</summary>
    public int NumLayers { get; }

    /// <summary>Experts per layer.</summary>
    public int NumExperts { get; }

    /// <summary>Hidden size.</summary>
    public int HiddenSize { get; }

    /// <summary>Tokens the gates were fitted on (read back from the file's metadata after a load).</summary>
    public long Tokens { get; }

    /// <summary>The ridge strength of the fit, relative to the mean diagonal of the inputs' Gram matrix (read back from the file's metadata after a load).</summary>
    public double Ridge { get; }

    internal FittedPregate(int numLayers, int numExperts, int hiddenSize, float[][] weights, float[][] biases, long tokens, double ridge)
    {
        NumLayers = numLayers;
        NumExperts = numExperts;
        HiddenSize = hiddenSize;
        _weights = weights;
        _biases = biases;
        Tokens = tokens;
        Ridge = ridge;
    }

    /// <summary>The gate predicting layer <paramref name="layer"/> (1..L-1) from layer layer-1's MoE input: [E, H].</summary>
    public ReadOnlySpan<float> Weight(int layer) => _weights[CheckLayer(layer)];

    /// <summary>Its bias: [E].</summary>
    public ReadOnlySpan<float> Bias(int layer) => _biases[CheckLayer(layer)];

    private int CheckLayer(int layer) => layer >= 1 && layer < NumLayers
        ? layer
        : throw new ArgumentOutOfRangeException(nameof(layer), $"pre-gates exist for layers 1..{NumLayers - 1}, not {layer}");

    /// <summary>Throws when the gates were fitted for a model of another shape.</summary>
    /// <exception cref="ModelFormatException">Layers, experts or hidden size differ.</exception>
    internal void CheckFits(ModelConfig config)
    {
        if (config.NumLayers != NumLayers || config.NumExperts != NumExperts || config.HiddenSize != HiddenSize)
            throw new ModelFormatException(
                $"the fitted pre-gate is for {NumLayers} layers x {NumExperts} experts, hidden size {HiddenSize}; " +
                $"the model has {config.NumLayers} x {config.NumExperts}, hidden size {config.HiddenSize}");
    }

    /// <summary>Writes the gates as a safetensors file: pregate.{layer}.weight [E, H] and pregate.{layer}.bias [E], F32.</summary>
    public void Save(string path)
    {
        var inv = CultureInfo.InvariantCulture;
        var metadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["num_layers"] = NumLayers.ToString(inv),
            ["tokens"] = Tokens.ToString(inv),
            ["ridge"] = Ridge.ToString("R", inv),
        };
        var tensors = Enumerable.Range(1, NumLayers - 1).SelectMany(l => new[]
        {
            (WeightName(l), new long[] { NumExperts, HiddenSize }, _weights[l]),
            (BiasName(l), new long[] { NumExperts }, _biases[l]),
        });
        SafetensorsFile.Write(path, tensors, metadata);
    }

    /// <summary>Reads gates written by <see cref="Save"/>.</summary>
    /// <exception cref="ModelFormatException">The file is missing, malformed or not a complete set of pre-gates.</exception>
    public static FittedPregate Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        var meta = file.Metadata;
        var byName = file.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        if (!byName.TryGetValue(WeightName(1), out var first) || first.Shape.Length != 2)
            throw new ModelFormatException($"{path}: not a fitted pre-gate file (no 2-D {WeightName(1)})");
        int experts = checked((int)first.Shape[0]), hidden = checked((int)first.Shape[1]);
        int layers = 1;
        while (byName.ContainsKey(WeightName(layers))) layers++;
        if (byName.Count != 2 * (layers - 1))
            throw new ModelFormatException($"{path}: expected pregate.1..{layers - 1}.weight/.bias and nothing else, found {byName.Count} tensors");
        var weights = new float[layers][];
        var biases = new float[layers][];
        weights[0] = biases[0] = [];
        for (int l = 1; l < layers; l++)
        {
            weights[l] = Read(file, byName, path, WeightName(l), experts, hidden);
            biases[l] = Read(file, byName, path, BiasName(l), experts);
        }
        long tokens = MetadataNumber<long>(path, meta, "tokens");
        double ridge = MetadataNumber<double>(path, meta, "ridge");
        return new FittedPregate(layers, experts, hidden, weights, biases, tokens, ridge);
    }

    /// <summary>A number from the metadata: 0 when absent (files need not record it), an error when not a number.</summary>
    private static T MetadataNumber<T>(string path, IReadOnlyDictionary<string, string> meta, string key) where T : System.Numerics.INumber<T>
    {
        if (!meta.TryGetValue(key, out var text)) return T.Zero;
        return T.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new ModelFormatException($"{path}: metadata '{key}' is '{text}', not a number");
    }

    private static float[] Read(SafetensorsFile file, Dictionary<string, TensorInfo> byName, string path, string name, params long[] shape)
    {
        if (!byName.TryGetValue(name, out var info)) throw new ModelFormatException($"{path}: {name} is missing");
        if (!info.Shape.SequenceEqual(shape))
            throw new ModelFormatException($"{path}: {name} has shape {info.ShapeText}, expected [{string.Join(", ", shape)}]");
        if (info.DType != TensorDType.F32) throw new ModelFormatException($"{path}: {name} is {info.DType}, expected F32");
        var values = new float[info.ElementCount];
        WeightConversion.ToF32(file.Bytes(info), info.DType, values);
        if (values.Any(v => !float.IsFinite(v))) throw new ModelFormatException($"{path}: {name} holds a value that is not finite");
        return values;
    }

    private const string Format = "emoe-pregate";

    private static string WeightName(int layer) => $"pregate.{layer}.weight";

    private static string BiasName(int layer) => $"pregate.{layer}.bias";
}
