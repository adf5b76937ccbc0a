namespace eMoE.Compute.Ilgpu;

/// <summary>
/// What a pass that computes some of a layer's experts away from the device (on the host,
/// <see cref="HostExpertRunner"/>; on another device, <see cref="PeerExpertRunner"/>) exchanges
/// with it: the step's normalised activations and routing come down, and the output rows of the
/// assignments computed elsewhere go back into the device's per-assignment output, which its
/// combine then sums with the rest.
/// </summary>
internal static class ExpertRows
{
    /// <summary>
    /// Waits for the device's queued work (it wrote the activations and the routing), then reads
    /// <paramref name="x"/>.Length floats of <see cref="ExpertOp.X"/> and <paramref name="ids"/>.Length
    /// expert ids back.
    /// </summary>
    public static void Download(IlgpuBackend device, in ExpertOp op, Span<float> x, Span<int> ids)
    {
        device.Synchronize();
        device.Download(op.X.Slice(0, x.Length), x);
        device.Download(op.ExpertIds.Slice(0, ids.Length), ids);
    }

    /// <summary>The assignments whose expert is marked in <paramref name="present"/>, in order, into <paramref name="assignments"/>; returns how many.</summary>
    public static int Select(ReadOnlySpan<int> ids, ReadOnlySpan<bool> present, Span<int> assignments)
    {
        int count = 0;
        for (int a = 0; a < ids.Length; a++)
        {
            if (present[ids[a]]) assignments[count++] = a;
        }
        return count;
    }
}
