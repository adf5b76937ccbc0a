using eMoE.Experts;
using eMoE.Inference;
using eMoE.Prediction;

namespace eMoE.Scheduling;

/// <summary>
/// The engine loop: any number of callers submit sequences; one background thread runs steps.
/// Each step it frees cancelled sequences, admits waiting ones (the scheduler orders and admits,
/// within the batch limit and the KV pool), builds one ragged batch (decode tokens first, then
/// prefill chunks of the rest of the token budget), grows KV block tables (preempting the latest
/// admitted sequences when the pool is full: they are recomputed later, with identical output),
/// runs the forward pass, and hands each sequence its sampled token or scores. The predictor sees
/// requests start, finish their prefill and end, and the resident set follows the whole batch.
/// </summary>
internal sealed class InferenceEngine : IDisposable
{
    private readonly IStepRunner _forward;
    private readonly PagedKvCache _kv;
    private readonly IExpertResidency _experts;
    private readonly ResidencyPlanner? _planner;
    private readonly RequestScheduler _scheduler;
    private readonly int _maxBatch;
    private readonly StepBatch _step;
    private readonly TimeProvider _time;
    private readonly long _started;
    private readonly object _lock = new();                    // guards _incoming, _stopping, _failure, the counters
    private readonly object _stepLock = new();                // held while a step runs; between steps the device is idle
    private readonly List<Sequence> _incoming = [];
    private readonly List<Sequence> _waiting = [];            // loop only; preempted sequences first, then in arrival order
    private readonly List<Sequence> _running = [];            // loop only; in admission order (the last is preempted first)
    private readonly List<(Sequence Sequence, int Rows)> _stepped = [];
    private readonly SemaphoreSlim _wake = new(0);
    private readonly ManualResetEventSlim _idle = new(false); // set while the loop waits with nothing to run and nothing submitted
    private readonly Thread _thread;
    private readonly int _watermarkBlocks;
    private long _nextId;
    private bool _stopping;
    private Exception? _failure;
    private int _largestBatch;
    private long _steps, _prefillTokens, _sampledTokens, _preemptions;

    /// <param name="forward">Runs the steps.</param>
    /// <param name="experts">The expert residency the planner's resident sets go to.</param>
    /// <param name="planner">eMoE's predictor, or null.</param>
    /// <param name="options">Batch limit and scheduler.</param>
    /// <param name="time">The clock of arrivals, tokens and step durations; default the system's.</param>
    public InferenceEngine(IStepRunner forward, IExpertResidency experts, ResidencyPlanner? planner, EngineOptions options, TimeProvider? time = null)
    {
        _forward = forward;
        _time = time ?? TimeProvider.System;
        _started = _time.GetTimestamp();
        _kv = forward.KvCache;
        _experts = experts;
        _planner = planner;
        _maxBatch = Math.Min(options.MaxBatch, forward.MaxTokensPerStep); // every running sequence gets a token each step
        var lengths = new OutputLengthProfile();
        foreach (var (task, tokens) in options.ExpectedOutputTokens ?? new Dictionary<string, double>()) lengths.Seed(task, tokens);
        // Priors until three steps are measured: 10 ms a step, 1 ms per token.
        _scheduler = RequestScheduler.Create(options.Scheduler, lengths, new StepCostModel(0.01, 0.001, 0.001));
        _step = new StepBatch(forward.MaxTokensPerStep, _maxBatch, _kv.MaxBlocksPerSequence);
        // Admission leaves a little room so running sequences can grow without preempting each other at once.
        _watermarkBlocks = Math.Max(1, _kv.Blocks / 100);
        _thread = new Thread(Loop) { IsBackground = true, Name = "emoe-engine" };
        _thread.Start();
    }

    /// <summary>The engine's clock: the time since it started.</summary>
    public TimeSpan Now => _time.GetElapsedTime(_started);

    /// <summary>The learned output lengths per task (the scheduler's profile).</summary>
    public OutputLengthProfile OutputLengths => _scheduler.Lengths;

    /// <summary>A fresh sequence id (arrival order).</summary>
    public long NextId() => Interlocked.Increment(ref _nextId);

    /// <summary>Queues a sequence; it is admitted by the loop. Throws when the engine has failed or is stopping.</summary>
    public void Submit(Sequence sequence)
    {
        lock (_lock)
        {
            if (_failure is not null) throw new InvalidOperationException("the engine failed and runs no more requests", _failure);
            ObjectDisposedException.ThrowIf(_stopping, this);
            _idle.Reset();
            // A cancelled caller wakes the loop, which frees the sequence within one step.
            sequence.Registration = sequence.Cancellation.Register(static state => ((InferenceEngine)state!).Wake(), this);
            _incoming.Add(sequence);
        }
        Wake();
    }

    private void Wake() => _wake.Release();

    /// <summary>
    /// Blocks until the loop has nothing to run and nothing has been submitted since, or
    /// <paramref name="timeout"/> passes (returns false then). A driver of a simulated clock waits
    /// here before it moves the clock to the next arrival.
    /// </summary>
    public bool WaitUntilIdle(TimeSpan timeout) => _idle.Wait(timeout);

    /// <summary>Runs <paramref name="action"/> between steps, while the device is idle (e.g. to change the resident set).</summary>
    public void BetweenSteps(Action action)
    {
        lock (_stepLock) action();
    }

    /// <summary>A consistent snapshot of the counters.</summary>
    public EngineStats Stats()
    {
        lock (_lock)
        {
            return new EngineStats
            {
                Running = _runningCount, Waiting = _waitingCount, LargestBatch = _largestBatch, Steps = _steps,
                PrefillTokens = _prefillTokens, SampledTokens = _sampledTokens, Preemptions = _preemptions,
                KvBlockBytes = _kv.BlockBytes, KvBlocks = _kv.Blocks, KvBlocksUsed = _kvUsed, KvBlocksPeak = _kv.PeakUsedBlocks,
            };
        }
    }

    private int _runningCount, _waitingCount, _kvUsed;

    private void Loop()
    {
        try
        {
            _forward.Bind();
            while (true)
            {
                lock (_lock)
                {
                    if (_stopping) break;
                    _waiting.AddRange(_incoming);
                    _incoming.Clear();
                }
                lock (_stepLock)
                {
                    DropCancelled();
                    Admit();
                    if (_running.Count > 0) Step();
                    Publish();
                }
                // Idle until a request arrives, a caller cancels or the engine stops. (A step that
                // preempted everything left work waiting: the next round admits it.)
                if (_running.Count == 0 && _waiting.Count == 0)
                {
                    lock (_lock)
                    {
                        if (_incoming.Count == 0) _idle.Set();
                    }
                    _wake.Wait();
                }
            }
        }
        catch (Exception e)
        {
            lock (_lock) _failure = e;
            Publish();
        }
        // Stopped or failed: nothing more runs; every caller hears of it.
        var error = _failure ?? new ObjectDisposedException(nameof(InferenceEngine), "the engine was stopped");
        lock (_lock)
        {
            _waiting.AddRange(_incoming);
            _incoming.Clear();
        }
        foreach (var s in _running.Concat(_waiting)) End(s, error);
        _running.Clear();
        _waiting.Clear();
    }

    /// <summary>Frees every sequence whose caller has cancelled (their KV blocks return to the pool at once).</summary>
    private void DropCancelled()
    {
        for (int i = _running.Count - 1; i >= 0; i--)
        {
            if (!_running[i].Cancellation.IsCancellationRequested) continue;
            End(_running[i], null);
            _running.RemoveAt(i);
        }
        for (int i = _waiting.Count - 1; i >= 0; i--)
        {
            if (!_waiting[i].Cancellation.IsCancellationRequested) continue;
            End(_waiting[i], null);
            _waiting.RemoveAt(i);
        }
    }

    /// <summary>
    /// Admits waiting sequences while the batch and the KV pool have room: preempted ones first
    /// (they already waited), then in the scheduler's order, each only if the scheduler allows.
    /// A sequence that does not fit the pool stops admission, so nobody overtakes it by being small.
    /// </summary>
    private void Admit()
    {
        if (_waiting.Count == 0 || _running.Count >= _maxBatch) return;
        var context = new SchedulerContext { Now = Now, ExpertLoadSeconds = ExpertLoadSeconds };
        var preempted = _waiting.Where(s => s.Preemptions > 0).ToList();
        var fresh = _waiting.Where(s => s.Preemptions == 0).ToList();
        bool planChanged = false;
        foreach (var s in preempted.Concat(_scheduler.Order(fresh, context)))
        {
            if (_running.Count >= _maxBatch) break;
            // The whole known text must fit now, plus one block for what it generates next.
            int needed = _kv.BlocksFor(s.Tokens.Count + 1);
            if (needed > _kv.FreeBlocks - (_running.Count > 0 ? _watermarkBlocks : 0)) break;
            if (s.Preemptions == 0 && !_scheduler.MayAdmit(s, _running, context)) continue;
            _waiting.Remove(s);
            _running.Add(s);
            s.AdmittedAt ??= Now;
            if (!s.Planned)
            {
                s.Planned = true;
                planChanged |= _planner?.BeginPrompt(s.Task) is not null;
            }
        }
        if (planChanged) ApplyBatchPlan();
    }

    /// <summary>eMoE's ΔE for a task: bytes of its predicted experts not resident now over the measured copy rate; 0 when unknown.</summary>
    private double ExpertLoadSeconds(string? task)
    {
        if (_planner?.TaskSet(task) is not { } set || _experts.CopyBytesPerSecond is not double rate) return 0;
        return _experts.AbsentBytes(set) / rate;
    }

    /// <summary>
    /// Applies the resident set for the running batch: the tasks' expected loads (input tokens plus
    /// expected output of their running requests) weigh their predicted experts. Reroute mode routes
    /// only to landed experts, so it waits for the set (eMoE's ΔE).
    /// </summary>
    private void ApplyBatchPlan()
    {
        if (_planner is null) return;
        var loads = _running.GroupBy(s => s.Task ?? "", StringComparer.Ordinal)
            .Select(g => (Task: g.First().Task, Load: g.Sum(s => s.PromptLength + _scheduler.Lengths.Expected(s.Task))))
            .ToList();
        if (_planner.BatchSet(loads) is { } plan) _experts.SetPredictedSet(plan, waitForCopies: _experts.OnMiss == MissMode.Reroute);
    }

    /// <summary>Builds and runs one step (nothing runs when every running sequence had to be preempted).</summary>
    private void Step()
    {
        _step.Clear();
        _step.Number = _steps;
        _stepped.Clear();
        foreach (var s in _running) s.StepRows = 0;
        int prefill = 0, decode = 0;
        // Decode tokens first, so a long prompt never stalls the sequences already generating; then prefill chunks.
        for (int phase = 0; phase < 2; phase++)
        {
            bool decoding = phase == 0;
            for (int i = 0; i < _running.Count && _step.Room > 0; i++)
            {
                var s = _running[i];
                if ((s.Pending == 1) != decoding || s.StepRows > 0) continue;
                int n = s.NextChunk(_step.Room);
                if (n == 0 || !Grow(s, s.Fed + n, ref i)) continue;
                int first = _step.Add(s.TokenSpan(s.Fed, n), s.Fed, s.Blocks, _kv.BlockSize, s.HooksAt(s.Fed));
                s.RequestLogits(_step, first, n);
                s.StepRows = n;
                _stepped.Add((s, n));
                if (decoding) decode += n; else prefill += n;
            }
        }
        if (_step.Tokens == 0) return;

        long start = _time.GetTimestamp();
        _forward.Run(_step);
        var elapsed = _time.GetElapsedTime(start);
        _scheduler.Costs.Observe(_stepped.Count, prefill, decode, elapsed);
        var now = Now;
        bool planChanged = false;
        foreach (var (s, rows) in _stepped)
        {
            if (s is ScoringSequence scoring) scoring.TakeScores(_step, rows);
            s.Advance(rows);
            if (s is GenerationSequence generation && generation.TakeSample(_step, now))
            {
                lock (_lock) _sampledTokens++;
                if (!s.PrefillSeen)
                {
                    s.PrefillSeen = true;
                    planChanged |= AfterPrefill(s);
                }
            }
        }
        lock (_lock)
        {
            _steps++;
            _prefillTokens += prefill;
            _largestBatch = Math.Max(_largestBatch, _stepped.Count);
        }
        for (int i = _running.Count - 1; i >= 0; i--)
        {
            if (!_running[i].Finished) continue;
            End(_running[i], null);
            _running.RemoveAt(i);
        }
        if (planChanged) ApplyBatchPlan();
    }

    /// <summary>The request's prompt has been fed: the predictor may refine its set from the prefill's routing.</summary>
    private bool AfterPrefill(Sequence s)
    {
        if (_planner is null || s.Recorder is not { } recorder) return false;
        return _planner.AfterPrefill(s.Task, RoutingCounts.Prefill(recorder.Trace, recorder.Trace.Steps.Count)) is not null;
    }

    /// <summary>
    /// Grows the block table of <paramref name="s"/> (at <paramref name="index"/> in the running list)
    /// to cover <paramref name="positions"/>. When the pool is short, preempts running sequences
    /// from the latest admitted back, skipping those already in this step; if that is not enough,
    /// preempts <paramref name="s"/> itself. Returns whether <paramref name="s"/> may run this step.
    /// </summary>
    private bool Grow(Sequence s, int positions, ref int index)
    {
        while (!_kv.TryGrow(s.Blocks, positions))
        {
            int victim = -1;
            for (int j = _running.Count - 1; j > index; j--)
            {
                if (_running[j].StepRows == 0)
                {
                    victim = j;
                    break;
                }
            }
            if (victim < 0)
            {
                Preempt(index);
                index--;
                return false;
            }
            Preempt(victim);
        }
        return true;
    }

    /// <summary>Drops a running sequence's KV blocks and puts it back at the front of the waiting list (recomputed on readmission).</summary>
    private void Preempt(int index)
    {
        var s = _running[index];
        _running.RemoveAt(index);
        _kv.Release(s.Blocks);
        s.Preempt();
        _waiting.Insert(_waiting.Count(w => w.Preemptions > 0), s);
        lock (_lock) _preemptions++;
    }

    /// <summary>
    /// A sequence leaves the engine: its blocks go back to the pool, the predictor learns its
    /// routing, the scheduler its output length; an unfinished one is aborted with <paramref name="error"/>
    /// (null: cancelled).
    /// </summary>
    private void End(Sequence s, Exception? error)
    {
        _kv.Release(s.Blocks);
        lock (_lock) _kvUsed = _kv.UsedBlocks;
        s.Registration.Dispose();
        if (s.Finished && s is GenerationSequence g) _scheduler.OnFinished(g.Task, g.GeneratedTokens);
        if (s.Planned && s.Recorder is { } recorder) _planner?.EndPrompt(recorder.Trace);
        // Last: the caller may look at the engine's stats as soon as it hears.
        if (s.Finished) s.Complete();
        else s.Abort(error);
    }

    private void Publish()
    {
        lock (_lock)
        {
            _runningCount = _running.Count;
            _waitingCount = _waiting.Count + _incoming.Count;
            _kvUsed = _kv.UsedBlocks;
        }
    }

    /// <summary>Stops the loop; unfinished requests end with <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        lock (_lock) _stopping = true;
        _wake.Release();
        _thread.Join();
        _idle.Dispose();
    }
}
