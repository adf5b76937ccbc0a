using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Model;

namespace eMoE.GpuCheck.Workloads;

/// <summary>
/// Greedy decode of one sequence of a model directory on one device, step by step as the engine
/// runs it for a batch of one (the forward pass for one token, then sampling, which waits for the
/// device and reads the token back), without the engine loop around it. The BenchmarkDotNet decode
/// benchmark (bench/eMoE.Benchmarks) and the GPU check's decode timing both run these steps.
/// </summary>
internal sealed class DecodeWorkload : IDisposable
{
    /// <summary>Tokens generated per timed invocation.</summary>
    public const int Tokens = 64;

    /// <summary>Prompt length.</summary>
    public const int PromptTokens = 16;

    private static readonly SamplingOptions Greedy = new();

    private readonly ComputeBackend _device;
    private readonly ModelWeights _weights;
    private readonly PagedKvCache _kv;
    private readonly ForwardPass _forward;
    private readonly StepBatch _step;
    private readonly List<int> _blocks = [];
    private readonly int[] _prompt;
    private int _next;

    /// <summary>The backend's name (the GPU, or the CPU accelerator).</summary>
    public string DeviceName => _device.Name;

    /// <summary>Loads <paramref name="directory"/> onto <paramref name="device"/>, all experts resident; the KV pool holds this one sequence.</summary>
    public DecodeWorkload(string directory, DeviceSpec device)
    {
        var config = ModelConfig.Load(directory);
        _prompt = Prompt(config.VocabSize);
        var checkpoint = Checkpoint.Open(directory); // the weights keep it open (the host backend reads it in place)
        _device = ComputeBackend.Create(device);
        _weights = ModelWeights.Upload(_device, config, checkpoint, new ExpertCacheOptions(), progress: null);
        // As MoeModel.Load sizes a step by default.
        int context = Math.Min(config.MaxPositionEmbeddings, 4096);
        _kv = new PagedKvCache(_device, config, context, blocks: (context + PagedKvCache.DefaultBlockSize - 1) / PagedKvCache.DefaultBlockSize);
        _forward = new ForwardPass(_device, config, _weights, _kv, context, maxTokensPerStep: 256, maxSequences: 1);
        _step = new StepBatch(256, 1, _kv.MaxBlocksPerSequence);
        _kv.TryGrow(_blocks, context);
        _device.Synchronize();
    }

    /// <summary>Prefills the prompt (again), so that the next <see cref="Decode"/> starts right after it.</summary>
    public void Prefill()
    {
        _forward.Bind();
        _next = Step(_prompt, 0);
    }

    /// <summary><paramref name="tokens"/> decode steps after the prompt; returns the last token.</summary>
    public int Decode(int tokens = Tokens)
    {
        int position = _prompt.Length;
        for (int i = 0; i < tokens; i++) _next = Step([_next], position++);
        return _next;
    }

    /// <summary>One step of one sequence, as the engine runs it: the tokens at <paramref name="start"/>.., then the last row sampled.</summary>
    private int Step(int[] tokens, int start)
    {
        _step.Clear();
        int first = _step.Add(tokens, start, _blocks, _kv.BlockSize, hooks: null);
        _step.Samples.Add(new SampleRow(first + tokens.Length - 1, Greedy, 0f));
        _forward.Run(_step);
        return _step.Sampled[0];
    }

    /// <summary>A fixed prompt: BOS-like id 1, then ids spread over the vocabulary.</summary>
    public static int[] Prompt(int vocab) => [1, .. Enumerable.Range(1, PromptTokens - 1).Select(i => 3 + i * 97 % (vocab - 3))];

    public void Dispose()
    {
        _forward.Dispose();
        _kv.Dispose();
        _weights.Dispose();
        _device.Dispose();
    }
}
