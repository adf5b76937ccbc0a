using System.Collections.Concurrent;
using System.Diagnostics;
using eMoE.Compute.Ilgpu;

namespace eMoE.Experts;

/// <summary>
/// The copy engine: moves experts from the page-locked host store into device slots on its own
/// stream and thread, so copies overlap compute. It knows nothing of residency: the cache asks it
/// to start copies and collects the ones that have landed. It also measures the link's copy rate.
/// </summary>
internal sealed class ExpertCopier : IDisposable
{
    private readonly IlgpuBackend _device;
    private readonly HostExpertStore _host;
    private readonly ExpertSlab _slab;
    private readonly BlockingCollection<(ExpertKey Key, int Slot, ManualResetEventSlim Done)> _queue = new();
    private readonly Thread _thread;
    private readonly object _lock = new();
    private readonly Dictionary<ExpertKey, ManualResetEventSlim> _inFlight = [];
    private readonly List<ExpertKey> _landed = [];
    private long _bytesCopied;
    private double _copySeconds;
    private Exception? _failure;

    public ExpertCopier(IlgpuBackend device, HostExpertStore host, ExpertSlab slab)
    {
        _device = device;
        _host = host;
        _slab = slab;
        _thread = new Thread(CopyLoop) { IsBackground = true, Name = "emoe-expert-copies" };
        _thread.Start();
    }

    /// <summary>Copies in flight (queued or copying).</summary>
    public int InFlightCount
    {
        get { lock (_lock) return _inFlight.Count; }
    }

    /// <summary>Measured host-to-device rate over every copy so far, in bytes per second; null before the first copy.</summary>
    public double? BytesPerSecond
    {
        get { lock (_lock) return _copySeconds > 0 ? _bytesCopied / _copySeconds : null; }
    }

    /// <summary>Queues the copy of <paramref name="key"/> into <paramref name="slot"/>; the event is set when it has landed.</summary>
    public ManualResetEventSlim Start(ExpertKey key, int slot)
    {
        var done = new ManualResetEventSlim(false);
        lock (_lock) _inFlight[key] = done;
        _queue.Add((key, slot, done));
        return done;
    }

    /// <summary>The landing event of an in-flight copy of <paramref name="key"/>, or null when none is in flight.</summary>
    public ManualResetEventSlim? InFlight(ExpertKey key)
    {
        lock (_lock) return _inFlight.GetValueOrDefault(key);
    }

    /// <summary>Moves the keys whose copies have landed since the last call into <paramref name="into"/>.</summary>
    public void TakeLanded(List<ExpertKey> into)
    {
        lock (_lock)
        {
            into.AddRange(_landed);
            _landed.Clear();
        }
    }

    /// <summary>Blocks until some copy in flight lands (returns at once when none is in flight); returns the seconds waited.</summary>
    public double WaitForLanding()
    {
        long start = Stopwatch.GetTimestamp();
        lock (_lock)
        {
            int before = _landed.Count;
            while (_inFlight.Count > 0 && _landed.Count == before && _failure is null) Monitor.Wait(_lock);
        }
        return Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    /// <summary>Blocks until every queued copy has landed.</summary>
    public void WaitAll()
    {
        List<ManualResetEventSlim> pending;
        lock (_lock) pending = [.. _inFlight.Values];
        foreach (var done in pending) done.Wait();
    }

    /// <summary>Throws when a copy has failed: the device state can no longer be trusted.</summary>
    public void ThrowIfFailed()
    {
        lock (_lock)
        {
            if (_failure is not null) throw new InvalidOperationException("copying an expert to the device failed", _failure);
        }
    }

    private void CopyLoop()
    {
        _device.Accelerator.Bind();
        using var stream = _device.Accelerator.CreateStream();
        foreach (var (key, slot, done) in _queue.GetConsumingEnumerable())
        {
            long start = Stopwatch.GetTimestamp();
            Exception? failure = null;
            try
            {
                _slab.FillAsync(slot, _host.Pointer(key), stream);
                stream.Synchronize();
            }
            catch (Exception e)
            {
                failure = e;
            }
            lock (_lock)
            {
                _failure ??= failure;
                _bytesCopied += _host.ExpertBytes;
                _copySeconds += Stopwatch.GetElapsedTime(start).TotalSeconds;
                _inFlight.Remove(key);
                _landed.Add(key);
                Monitor.PulseAll(_lock);
            }
            done.Set();
        }
    }

    public void Dispose()
    {
        _queue.CompleteAdding();
        _thread.Join();
        _queue.Dispose();
    }
}
