using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using eMoE.Compute;
using eMoE.GpuCheck.Workloads;
using eMoE.Inference;

namespace eMoE.Benchmarks;

/// <summary>
/// Greedy decode of a real model directory (default: the shipped weights/tiny-mixtral; override
/// with EMOE_BENCH_MODEL). A 16-token prompt is prefilled, then 64 tokens are generated; the
/// reported time is per generated token (OperationsPerInvoke), so the tokens/s column is the
/// decode rate.
/// </summary>
/// <remarks>
/// <see cref="Decode"/> times the decode steps alone (<see cref="DecodeWorkload"/>, which the GPU
/// check times too): the prompt is prefilled in the iteration setup, outside the measurement, and
/// each step is exactly what the engine runs per token of a batch of one, without the engine loop
/// around it. <see cref="GenerateIdsAsync"/> times the public streaming API end to end, prefill
/// included. Each iteration is one invocation of 64 tokens (the Monitoring strategy), since a
/// token takes milliseconds and the prompt must be re-prefilled before every invocation.
/// </remarks>
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5, invocationCount: 1)]
public class DecodeBenchmark
{
    /// <summary>Tokens generated per invocation.</summary>
    public const int Tokens = DecodeWorkload.Tokens;

    [ParamsSource(nameof(Devices))]
    public DeviceSpec Device { get; set; }

    public static IEnumerable<DeviceSpec> Devices => BenchSettings.Devices;

    private int[] _prompt = [];

    // Decode: the engine's own forward pass over the model's weights.
    private DecodeWorkload? _decode;

    // GenerateIdsAsync: the public API.
    private MoeModel? _model;

    [GlobalSetup(Target = nameof(Decode))]
    public void SetupForwardPass() => _decode = new DecodeWorkload(BenchSettings.ModelDirectory(), Device);

    [IterationSetup(Target = nameof(Decode))]
    public void Prefill() => _decode!.Prefill();

    [Benchmark(OperationsPerInvoke = Tokens)]
    public int Decode() => _decode!.Decode(Tokens);

    [GlobalSetup(Target = nameof(GenerateIdsAsync))]
    public void SetupModel()
    {
        _model = MoeModel.Load(BenchSettings.ModelDirectory(), new ModelOptions { Device = Device });
        _prompt = DecodeWorkload.Prompt(_model.Config.VocabSize);
    }

    /// <summary>Prefill of the prompt plus 64 generated tokens through <see cref="MoeModel.GenerateIdsAsync"/>.</summary>
    [Benchmark(OperationsPerInvoke = Tokens)]
    public async Task<int> GenerateIdsAsync()
    {
        var options = new GenerationOptions { MaxTokens = Tokens, StopAtEndOfSequence = false };
        int last = -1;
        await foreach (int id in _model!.GenerateIdsAsync(_prompt, options, new GenerationStats())) last = id;
        return last;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _decode?.Dispose();
        _model?.Dispose();
    }
}
