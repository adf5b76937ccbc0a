using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Model;

namespace eMoE.Benchmarks;

/// <summary>
/// Greedy decode of a real model directory (default: the shipped weights/tiny-mixtral; override
/// with EMOE_BENCH_MODEL). A 16-token prompt is prefilled, then 64 tokens are generated; the
/// reported time is per generated token (OperationsPerInvoke), so the tokens/s column is the
/// decode rate.
/// </summary>
/// <remarks>
/// <see cref="Decode"/> times the decode steps alone: the prompt is prefilled in the iteration
/// setup, outside the measurement, and each step is exactly what the engine runs per token of a
/// batch of one (the forward pass for one token, then sampling, which waits for the device and
/// reads the token back), without the engine loop around it.
/// <see cref="GenerateIdsAsync"/> times the public streaming API end to end, prefill included.
/// Each iteration is one invocation of 64 tokens (the Monitoring strategy), since a token takes
/// milliseconds and the prompt must be re-prefilled before every invocation.
/// </remarks>
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5, invocationCount: 1)]
public class DecodeBenchmark
{
    /// <summary>Tokens generated per invocation.</summary>
    public const int Tokens = 64;

    /// <summary>Prompt length.</summary>
    public const int PromptTokens = 16;

    private static readonly SamplingOptions Greedy = new();

    [ParamsSource(nameof(Devices))]
    public DeviceSpec Device { get; set; }

    public static IEnumerable<DeviceSpec> Devices => BenchSettings.Devices;

    private int[] _prompt = [];

    // Decode: the engine's own forward pass over the model's weights.
    private ComputeBackend? _device;
    private ModelWeights? _weights;
    private PagedKvCache? _kv;
    private ForwardPass? _forward;
    private StepBatch? _step;
    private readonly List<int> _blocks = [];
    private int _next;

    // GenerateIdsAsync: the public API.
    private MoeModel? _model;

    [GlobalSetup(Target = nameof(Decode))]
    public void SetupForwardPass()
    {
        string directory = BenchSettings.ModelDirectory();
        var config = ModelConfig.Load(directory);
        _prompt = Prompt(config.VocabSize);
        var checkpoint = Checkpoint.Open(directory); // the weights keep it open (the host backend reads it in place)
        _device = ComputeBackend.Create(Device);
        _weights = ModelWeights.Upload(_device, config, checkpoint, new ExpertCacheOptions(), progress: null);
        // As MoeModel.Load sizes a step by default; the KV pool holds this one sequence.
        int context = Math.Min(config.MaxPositionEmbeddings, 4096);
        _kv = new PagedKvCache(_device, config, context, blocks: (context + PagedKvCache.DefaultBlockSize - 1) / PagedKvCache.DefaultBlockSize);
        _forward = new ForwardPass(_device, config, _weights, _kv, context, maxTokensPerStep: 256, maxSequences: 1);
        _step = new StepBatch(256, 1, _kv.MaxBlocksPerSequence);
        _kv.TryGrow(_blocks, context);
        _device.Synchronize();
    }

    [IterationSetup(Target = nameof(Decode))]
    public void Prefill()
    {
        _forward!.Bind();
        _next = Step(_prompt, 0);
    }

    [Benchmark(OperationsPerInvoke = Tokens)]
    public int Decode()
    {
        int position = _prompt.Length;
        for (int i = 0; i < Tokens; i++) _next = Step([_next], position++);
        return _next;
    }

    /// <summary>One step of one sequence, as the engine runs it: the tokens at <paramref name="start"/>.., then the last row sampled.</summary>
    private int Step(int[] tokens, int start)
    {
        _step!.Clear();
        int first = _step.Add(tokens, start, _blocks, _kv!.BlockSize, hooks: null);
        _step.Samples.Add(new SampleRow(first + tokens.Length - 1, Greedy, 0f));
        _forward!.Run(_step);
        return _step.Sampled[0];
    }

    [GlobalSetup(Target = nameof(GenerateIdsAsync))]
    public void SetupModel()
    {
        _model = MoeModel.Load(BenchSettings.ModelDirectory(), new ModelOptions { Device = Device });
        _prompt = Prompt(_model.Config.VocabSize);
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
        _forward?.Dispose();
        _kv?.Dispose();
        _weights?.Dispose();
        _device?.Dispose();
        _model?.Dispose();
    }

    /// <summary>A fixed prompt: BOS-like id 1, then ids spread over the vocabulary.</summary>
    private static int[] Prompt(int vocab) => [1, .. Enumerable.Range(1, PromptTokens - 1).Select(i => 3 + i * 97 % (vocab - 3))];
}
