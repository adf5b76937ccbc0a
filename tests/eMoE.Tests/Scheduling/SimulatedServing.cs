using eMoE.Compute;
using eMoE.Experts;
using eMoE.Inference;
using eMoE.Model;
using eMoE.Scheduling;

namespace eMoE.Tests.Scheduling;

/// <summary>A request of a simulated run: when it arrives (seconds), its prompt and output lengths, task and SLO.</summary>
internal sealed record SimulatedRequest(double Arrival, int PromptTokens, int OutputTokens, string Task, Slo Slo);

/// <summary>What one simulated request got, on the simulated clock (seconds).</summary>
internal sealed record SimulatedOutcome(SimulatedRequest Request, double FirstToken, double LastToken, int Tokens)
{
    public double Ttft => FirstToken - Request.Arrival;

    public double Tpot => Tokens > 1 ? (LastToken - FirstToken) / (Tokens - 1) : 0;

    public double E2e => LastToken - Request.Arrival;

    public bool MissedTtft => Request.Slo.TimeToFirstToken is { } ttft && Ttft > ttft.TotalSeconds;

    public bool MissedTpot => Request.Slo.TimePerOutputToken is { } tpot && Tokens > 1 && Tpot > tpot.TotalSeconds;

    public bool MetSlo => !MissedTtft && !MissedTpot;
}

/// <summary>
/// Step seconds = Fixed + Decode per decoded token + Prefill per prompt token, times e^(Noise · z) for
/// a standard normal z drawn per step (seeded, so still repeatable): real steps scatter around their
/// cost, and a scheduler that plans right up to an SLO's limit misses it about half the time then.
/// </summary>
internal sealed record ModelledStepCost(double Fixed, double Decode, double Prefill, double Noise = 0)
{
    /// <summary>The noiseless cost of a step.</summary>
    public double Of(int decodeTokens, int prefillTokens) => Fixed + Decode * decodeTokens + Prefill * prefillTokens;

    /// <summary>The cost of a step with its noise factor drawn from <paramref name="random"/> (none drawn without noise).</summary>
    public double Draw(int decodeTokens, int prefillTokens, Random random)
    {
        double cost = Of(decodeTokens, prefillTokens);
        if (Noise == 0) return cost;
        double z = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()); // Box-Muller
        return cost * Math.Exp(Noise * z);
    }
}

/// <summary>
/// The real engine loop and schedulers on a simulated clock: steps take a modelled time and sample a
/// fixed token, requests arrive at their arrival times. Nothing depends on the machine's speed or
/// load, so two runs of the same workload give the same timings to the nanosecond.
/// </summary>
internal static class SimulatedServing
{
    private const int Token = 5, EndOfSequence = 2, Context = 256, MaxTokensPerStep = 256, NoiseSeed = 12345;

    public static IReadOnlyList<SimulatedOutcome> Run(SchedulerKind scheduler, int maxBatch, ModelledStepCost cost, IReadOnlyList<SimulatedRequest> requests,
        IReadOnlyDictionary<string, double>? expectedOutput = null)
    {
        var config = ModelConfig.Load(RepoPaths.ShippedModel);
        using var backend = ComputeBackend.Create(DeviceKind.Cpu, threads: 1);
        using var kv = new PagedKvCache(backend, config, Context, blocks: maxBatch * Context / PagedKvCache.DefaultBlockSize + 1);
        var clock = new ManualClock();
        var arrivals = new ArrivalFeed(requests);
        var forward = new SimulatedForward(kv, clock, cost, arrivals);
        var options = new EngineOptions { MaxBatch = maxBatch, MaxTokensPerStep = MaxTokensPerStep, Scheduler = scheduler, ExpectedOutputTokens = expectedOutput };
        using var engine = new InferenceEngine(forward, new NoExperts(), null, options, clock);
        arrivals.Engine = engine;
        while (true)
        {
            // Only an idle engine lets the clock jump to the next arrival; while it works its steps move
            // the clock and submit what arrives meanwhile. Idle with nothing left to arrive: all done.
            if (!engine.WaitUntilIdle(TimeSpan.FromSeconds(60))) throw new TimeoutException($"the engine never went idle: {engine.Stats()}");
            if (arrivals.NextArrival is not { } next) break;
            clock.AdvanceTo(next);
            arrivals.SubmitDue(clock);
        }
        return arrivals.Collect();
    }

    /// <summary>A clock that moves only when told (nanosecond ticks).</summary>
    private sealed class ManualClock : TimeProvider
    {
        private long _ticks;

        public override long TimestampFrequency => 1_000_000_000;

        public override long GetTimestamp() => Interlocked.Read(ref _ticks);

        /// <summary>A time in seconds as this clock's ticks (rounded to the nanosecond).</summary>
        public static long Ticks(double seconds) => (long)Math.Round(seconds * 1e9);

        public void Advance(double seconds) => Interlocked.Add(ref _ticks, Ticks(seconds));

        public void AdvanceTo(double seconds)
        {
            long target = Ticks(seconds);
            if (target > Interlocked.Read(ref _ticks)) Interlocked.Exchange(ref _ticks, target);
        }
    }

    /// <summary>Submits each request once the clock has reached its arrival, with its arrival time.</summary>
    private sealed class ArrivalFeed(IReadOnlyList<SimulatedRequest> requests)
    {
        private readonly SimulatedRequest[] _order = requests.OrderBy(r => r.Arrival).ToArray();
        private readonly List<(SimulatedRequest Request, GenerationSequence Sequence)> _submitted = [];
        private readonly Lock _gate = new();
        private int _next;

        public InferenceEngine? Engine { get; set; }

        /// <summary>The next arrival not yet submitted, or null when every request has been.</summary>
        public double? NextArrival
        {
            get
            {
                lock (_gate) return _next < _order.Length ? _order[_next].Arrival : null;
            }
        }

        /// <summary>Submits every request whose arrival, in the clock's ticks, has been reached.</summary>
        public void SubmitDue(ManualClock clock)
        {
            long now = clock.GetTimestamp();
            lock (_gate)
            {
                while (_next < _order.Length && ManualClock.Ticks(_order[_next].Arrival) <= now)
                {
                    var r = _order[_next++];
                    var options = new GenerationOptions { MaxTokens = r.OutputTokens, Task = r.Task, Slo = r.Slo };
                    var sequence = new GenerationSequence(Engine!.NextId(), Enumerable.Repeat(Token, r.PromptTokens).ToArray(), options,
                        new HashSet<int> { EndOfSequence }, Context, TimeSpan.FromSeconds(r.Arrival), null, CancellationToken.None);
                    _submitted.Add((r, sequence));
                    Engine.Submit(sequence);
                }
            }
        }

        public IReadOnlyList<SimulatedOutcome> Collect()
        {
            var outcomes = new List<SimulatedOutcome>();
            foreach (var (request, sequence) in _submitted)
            {
                var tokens = new List<TokenEvent>();
                var read = Task.Run(async () =>
                {
                    await foreach (var token in sequence.Output.ReadAllAsync()) tokens.Add(token);
                });
                if (!read.Wait(TimeSpan.FromSeconds(60))) throw new TimeoutException("a simulated request never finished");
                outcomes.Add(new SimulatedOutcome(request, tokens[0].At.TotalSeconds, tokens[^1].At.TotalSeconds, tokens.Count));
            }
            return outcomes;
        }
    }

    /// <summary>A forward pass that takes its modelled time on the clock and samples <see cref="Token"/> for every row.</summary>
    private sealed class SimulatedForward(PagedKvCache kv, ManualClock clock, ModelledStepCost cost, ArrivalFeed arrivals) : IStepRunner
    {
        private readonly Random _noise = new(NoiseSeed);

        public int MaxTokensPerStep => SimulatedServing.MaxTokensPerStep;

        public PagedKvCache KvCache => kv;

        public void Bind()
        {
        }

        public void Run(StepBatch step)
        {
            int decode = 0, prefill = 0;
            foreach (var slice in step.Slices)
            {
                if (slice.Rows == 1) decode++;
                else prefill += slice.Rows;
            }
            for (int i = 0; i < step.Samples.Count; i++) step.Sampled[i] = Token;
            clock.Advance(cost.Draw(decode, prefill, _noise));
            arrivals.SubmitDue(clock); // requests that arrived during the step wait for the next one, as on a device
        }
    }

    /// <summary>No experts: without a predictor the engine never asks for any.</summary>
    private sealed class NoExperts : IExpertResidency
    {
        public MissMode OnMiss => MissMode.Load;
        public bool Pregate => false;
        public int PregateWidth => 0;
        public eMoE.Prediction.FittedPregate? FittedPregate => null;
        public int Slots => 0;
        public int TotalExperts => 0;
        public long ExpertBytes => 0;
        public double? CopyBytesPerSecond => null;
        public void BeginStep() => throw new NotSupportedException();
        public IEnumerable<ExpertPass> Passes(int layer, ReadOnlyMemory<int> expertIds, ReadOnlyMemory<int> lookahead) => throw new NotSupportedException();
        public bool Reroute(int layer, Span<int> ids, Span<float> weights, ReadOnlySpan<float> probabilities, int topK) => throw new NotSupportedException();
        public void SetPredictedSet(IReadOnlyCollection<ExpertKey> predicted, bool waitForCopies = false) => throw new NotSupportedException();
        public void Prefetch(IEnumerable<ExpertKey> keys) => throw new NotSupportedException();
        public long AbsentBytes(IEnumerable<ExpertKey> keys) => throw new NotSupportedException();
        public void WaitForPendingCopies() => throw new NotSupportedException();
        public ResidencyStats Snapshot() => throw new NotSupportedException();
        public void Dispose()
        {
        }
    }
}
