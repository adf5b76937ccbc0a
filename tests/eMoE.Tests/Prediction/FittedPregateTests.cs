using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Model;
using eMoE.Prediction;
using eMoE.Tests.Model;
using NUnit.Framework;

namespace eMoE.Tests.Prediction;

/// <summary>
/// Fitted pre-gates on the Mixtral fixture (2 layers x 8 experts, hidden 64): the fit reproduces the
/// next layer's router logits at least as well as its own router does, the file round-trips and is
/// checked, and the engine uses it without changing load-mode output.
/// </summary>
public sealed class FittedPregateTests
{
    private static readonly string Fixture = RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32");

    /// <summary>Deterministic pseudo-random token sequences of the fixture's vocabulary.</summary>
    private static List<IReadOnlyList<int>> Sequences(int count, int length)
    {
        var random = new Random(7);
        return Enumerable.Range(0, count).Select(_ => (IReadOnlyList<int>)Enumerable.Range(0, length).Select(_ => random.Next(3, 500)).ToArray()).ToList();
    }

    private static MoeModel Load(string budget = "all", FittedPregate? fitted = null) => MoeModel.Load(Fixture, new ModelOptions
    {
        Device = DeviceKind.IlgpuCpu,
        ContextLength = 64,
        Experts = new ExpertCacheOptions
        {
            Budget = ExpertBudget.Parse(budget), Policy = EvictionPolicyKind.Lru, Pregate = fitted is not null, FittedPregate = fitted,
        },
    });

    /// <summary>Every token's layer-0 MoE input [H] and layer-1 router logits [E].</summary>
    private sealed class Pairs(int hidden) : IRouterInputObserver
    {
        public List<float[]> Inputs { get; } = [];
        public List<float[]> NextLogits { get; } = [];

        public void OnRouterInput(int layer, ReadOnlySpan<float> input, ReadOnlySpan<float> logits)
        {
            int t = input.Length / hidden, e = logits.Length / t;
            for (int i = 0; i < t; i++)
            {
                if (layer == 0) Inputs.Add(input.Slice(i * hidden, hidden).ToArray());
                else NextLogits.Add(logits.Slice(i * e, e).ToArray());
            }
        }
    }

    /// <summary>Mean squared error of gate (weight [E, H], bias [E]) against the next layer's logits.</summary>
    private static double Error(Pairs pairs, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, int hidden)
    {
        double sum = 0;
        int experts = bias.Length;
        for (int i = 0; i < pairs.Inputs.Count; i++)
        {
            for (int e = 0; e < experts; e++)
            {
                double z = bias[e];
                for (int j = 0; j < hidden; j++) z += weight[e * hidden + j] * pairs.Inputs[i][j];
                sum += (z - pairs.NextLogits[i][e]) * (z - pairs.NextLogits[i][e]);
            }
        }
        return sum / (pairs.Inputs.Count * experts);
    }

    [Test]
    public void FitReproducesTheNextLayersLogitsBetterThanItsOwnRouter()
    {
        using var model = Load();
        var sequences = Sequences(6, 40);
        var fitted = PregateFitter.Fit(model, sequences, new PregateFitOptions { Ridge = 1e-4 });
        Assert.That(fitted.Tokens, Is.EqualTo(240));
        var pairs = new Pairs(model.Config.HiddenSize);
        foreach (var ids in sequences) model.ObserveRouterInputs(ids, pairs, default);
        using var checkpoint = Checkpoint.Open(Fixture);
        var router = checkpoint.ReadF32(checkpoint.Get(WeightLayout.Router(model.Config, 1)));
        double trainingFree = Error(pairs, router, new float[model.Config.NumExperts], model.Config.HiddenSize);
        double fit = Error(pairs, fitted.Weight(1), fitted.Bias(1), model.Config.HiddenSize);
        Assert.That(fit, Is.LessThan(0.5 * trainingFree), $"fitted {fit:G4} vs the next router on this layer's input {trainingFree:G4}");
    }

    [Test]
    public void AStrongRidgeGivesTheTrainingFreePregate()
    {
        using var model = Load();
        var fitted = PregateFitter.Fit(model, Sequences(2, 40), new PregateFitOptions { Ridge = 1e7 });
        using var checkpoint = Checkpoint.Open(Fixture);
        var router = checkpoint.ReadF32(checkpoint.Get(WeightLayout.Router(model.Config, 1)));
        Assert.That(fitted.Weight(1).ToArray(), Is.EqualTo(router).Within(1e-3));
        Assert.That(fitted.Bias(1).ToArray(), Is.All.EqualTo(0).Within(1e-3));
    }

    [Test]
    public async Task TheEngineUsesTheFittedPregateAndLoadModeStaysExact()
    {
        FittedPregate fitted;
        using (var all = Load()) fitted = PregateFitter.Fit(all, Sequences(4, 40));
        int[] prompt = [1, 17, 230, 45, 99, 310];
        var options = new GenerationOptions { MaxTokens = 16, StopAtEndOfSequence = false };
        var reference = new List<int>();
        using (var all = Load()) await foreach (int id in all.GenerateIdsAsync(prompt, options, new GenerationStats())) reference.Add(id);
        using var model = Load("50%", fitted);
        var ids = new List<int>();
        await foreach (int id in model.GenerateIdsAsync(prompt, options, new GenerationStats())) ids.Add(id);
        Assert.That(ids, Is.EqualTo(reference), "pre-gates only hint copies");
        Assert.That(model.ExpertStats.Layers[1].LookaheadActual, Is.Positive);
    }

    [Test]
    public void SavedGatesLoadBackExactly()
    {
        using var model = Load();
        var fitted = PregateFitter.Fit(model, Sequences(2, 30));
        string path = Path.Combine(Path.GetTempPath(), "emoe-pregate-roundtrip.safetensors");
        fitted.Save(path);
        var loaded = FittedPregate.Load(path);
        Assert.That((loaded.NumLayers, loaded.NumExperts, loaded.HiddenSize), Is.EqualTo((2, 8, 64)));
        Assert.That(loaded.Weight(1).ToArray(), Is.EqualTo(fitted.Weight(1).ToArray()));
        Assert.That(loaded.Bias(1).ToArray(), Is.EqualTo(fitted.Bias(1).ToArray()));
        Assert.That((loaded.Tokens, loaded.Ridge), Is.EqualTo((fitted.Tokens, fitted.Ridge)), "the fit's record survives the file");
        Assert.Throws<ArgumentOutOfRangeException>(() => loaded.Weight(0).ToArray(), "layer 0 has no pre-gate");
    }

    [Test]
    public void MalformedOrMismatchedFilesAreRejectedByName()
    {
        string dir = Path.Combine(Path.GetTempPath(), "emoe-pregate-bad");
        Directory.CreateDirectory(dir);
        string noBias = SafetensorsBuilder.Write(Path.Combine(dir, "nobias.safetensors"), [("pregate.1.weight", [8, 64], new float[8 * 64])]);
        Assert.That(() => FittedPregate.Load(noBias), Throws.TypeOf<ModelFormatException>().With.Message.Contains("pregate.1"));
        string badShape = SafetensorsBuilder.Write(Path.Combine(dir, "shape.safetensors"),
            [("pregate.1.weight", [8, 64], new float[8 * 64]), ("pregate.1.bias", [7], new float[7])]);
        Assert.That(() => FittedPregate.Load(badShape), Throws.TypeOf<ModelFormatException>().With.Message.Contains("pregate.1.bias has shape [7]"));
        string other = SafetensorsBuilder.Write(Path.Combine(dir, "other.safetensors"),
            [("pregate.1.weight", [8, 32], new float[8 * 32]), ("pregate.1.bias", [8], new float[8])]);
        var wrongModel = FittedPregate.Load(other);
        Assert.That(() => Load("50%", wrongModel), Throws.TypeOf<ModelFormatException>().With.Message.Contains("hidden size 32"));
        string notPregate = SafetensorsBuilder.Write(Path.Combine(dir, "weights.safetensors"), [("lm_head.weight", [2, 2], new float[4])]);
        Assert.That(() => FittedPregate.Load(notPregate), Throws.TypeOf<ModelFormatException>().With.Message.Contains("not a fitted pre-gate file"));
        const string gate = "\"pregate.1.weight\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]},\"pregate.1.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}";
        string badTokens = SafetensorsBuilder.WriteRaw(Path.Combine(dir, "tokens.safetensors"), "{\"__metadata__\":{\"tokens\":\"many\"}," + gate + "}", 8);
        Assert.That(() => FittedPregate.Load(badTokens), Throws.TypeOf<ModelFormatException>().With.Message.Contains("metadata 'tokens' is 'many'"));
        string numberMeta = SafetensorsBuilder.WriteRaw(Path.Combine(dir, "meta.safetensors"), "{\"__metadata__\":{\"tokens\":5}," + gate + "}", 8);
        Assert.That(() => FittedPregate.Load(numberMeta), Throws.TypeOf<ModelFormatException>().With.Message.Contains("__metadata__ value 'tokens' must be a string"));
    }
}
