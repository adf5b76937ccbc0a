using System.Globalization;
using System.Text;
using System.Text.Json;
using eMoE.Model;

namespace eMoE.Experts;

/// <summary>How an <see cref="ExpertPlacement"/> is made.</summary>
public enum PlacementMethod
{
    /// <summary>Expert e of every layer on device e mod D: the baseline.</summary>
    RoundRobin,
    /// <summary>
    /// Greedy by historical load: a layer's experts by load, heaviest first, each to the least-loaded
    /// device that still has room (E / D experts per device).
    /// </summary>
    Greedy,
    /// <summary>
    /// <see cref="Greedy"/> with 0.5 x the Pearson correlation of the expert's per-token activations
    /// with the experts already on a device (of this layer and the earlier ones) added to that
    /// device's cost: experts that fire together go apart.
    /// </summary>
    GreedyCorrelated,
    /// <summary>
    /// One of the others, chosen by validation inside the fit half (<see cref="AutoPlacement.Choose"/>):
    /// a fitted method only where it beat round-robin on every held-out fold of the fit half, else
    /// round-robin. It needs the fit half's traces, not only their loads.
    /// </summary>
    Auto,
}

/// <summary>
/// Which device serves each expert of each MoE layer when a model's experts are spread over several
/// devices (expert parallelism): every expert of every layer on exactly one device. Saved as JSON
/// (<see cref="Save"/>, <see cref="Load"/>): per device, its experts of each layer.
/// </summary>
public sealed class ExpertPlacement
{
    /// <summary>The <see cref="Method"/> name of <see cref="PlacementMethod.RoundRobin"/>.</summary>
    public const string RoundRobinName = "round_robin";
    /// <summary>The <see cref="Method"/> name of <see cref="PlacementMethod.Greedy"/>.</summary>
    public const string GreedyName = "greedy";
    /// <summary>The <see cref="Method"/> name of <see cref="PlacementMethod.GreedyCorrelated"/>.</summary>
    public const string GreedyCorrelatedName = "greedy_corr";
    /// <summary>The <see cref="Method"/> name of <see cref="PlacementMethod.Auto"/>; <see cref="ChosenMethod"/> says which method it chose.</summary>
    public const string AutoName = "auto";
    /// <summary>The weight of the correlation term of <see cref="PlacementMethod.GreedyCorrelated"/> (the paper's 0.5).</summary>
    public const double DefaultCorrelationWeight = 0.5;

    private const string Format = "emoe-expert-placement";
    private const int Version = 1;

    private readonly int[][] _deviceOf; // [layer][expert]
    private readonly int[][][] _experts; // [device][layer] -> experts in increasing id order

    /// <summary>
    /// A placement from the experts each device holds, checked: every expert of every layer on
    /// exactly one device, device ids in range, and (when <paramref name="equalExpertsPerDevice"/>)
    /// every device holding ⌊E / D⌋ or ⌈E / D⌉ experts of each layer.
    /// </summary>
    /// <param name="method">How it was made (<see cref="RoundRobinName"/>, <see cref="GreedyName"/>, <see cref="GreedyCorrelatedName"/> or any other label).</param>
    /// <param name="numLayers">MoE layers.</param>
    /// <param name="numExperts">Experts per layer.</param>
    /// <param name="expertsByDevice">[device][layer]: the experts of that layer on that device.</param>
    /// <param name="equalExpertsPerDevice">Whether the method promised an equal number of experts per device.</param>
    /// <exception cref="ArgumentException">The lists are not a placement; the message names the problem.</exception>
    public ExpertPlacement(string method, int numLayers, int numExperts, IReadOnlyList<IReadOnlyList<IReadOnlyList<int>>> expertsByDevice,
        bool equalExpertsPerDevice)
        : this(method, numLayers, numExperts, [.. expertsByDevice.Select((d, i) => (i, d))], expertsByDevice.Count, equalExpertsPerDevice)
    {
    }

    private ExpertPlacement(string method, int numLayers, int numExperts, IReadOnlyList<(int Device, IReadOnlyList<IReadOnlyList<int>> Layers)> entries,
        int devices, bool equalExpertsPerDevice)
    {
        if (string.IsNullOrWhiteSpace(method)) throw new ArgumentException("a placement needs a method name");
        if (numLayers < 1) throw new ArgumentException($"a placement needs at least one layer, got {numLayers} layers");
        if (numExperts < 1) throw new ArgumentException($"a placement needs at least one expert per layer, got {numExperts} experts");
        if (devices < 1) throw new ArgumentException($"a placement needs at least one device, got {devices} devices");
        if (devices > numExperts)
            throw new ArgumentException($"{devices} devices are more than the {numExperts} experts per layer: some device would hold no expert of a layer");
        Method = method;
        NumLayers = numLayers;
        NumExperts = numExperts;
        Devices = devices;
        EqualExpertsPerDevice = equalExpertsPerDevice;
        _deviceOf = [.. Enumerable.Range(0, numLayers).Select(_ => Enumerable.Repeat(-1, numExperts).ToArray())];
        _experts = new int[devices][][];
        foreach (var (device, layers) in entries)
        {
            if (device < 0 || device >= devices)
                throw new ArgumentException($"device id {device} is out of range: the placement has {devices} devices (ids 0..{devices - 1})");
            if (_experts[device] is not null) throw new ArgumentException($"device id {device} is listed twice");
            if (layers.Count != numLayers)
                throw new ArgumentException($"device {device} lists experts for {layers.Count} layers; the placement has {numLayers} layers");
            _experts[device] = new int[numLayers][];
            for (int l = 0; l < numLayers; l++)
            {
                foreach (int e in layers[l])
                {
                    if (e < 0 || e >= numExperts)
                        throw new ArgumentException($"device {device}, layer {l}: expert {e} is out of range: the placement has {numExperts} experts per layer");
                    if (_deviceOf[l][e] >= 0)
                    {
                        throw new ArgumentException(_deviceOf[l][e] == device
                            ? $"layer {l}: expert {e} is listed twice on device {device}"
                            : $"layer {l}: expert {e} is on two devices ({_deviceOf[l][e]} and {device})");
                    }
                    _deviceOf[l][e] = device;
                }
                _experts[device][l] = [.. layers[l].Order()];
            }
        }
        for (int d = 0; d < devices; d++)
        {
            if (_experts[d] is null) throw new ArgumentException($"device {d} is missing: the placement has {devices} devices and lists no experts for it");
        }
        for (int l = 0; l < numLayers; l++)
        {
            int missing = Array.IndexOf(_deviceOf[l], -1);
            if (missing >= 0) throw new ArgumentException($"layer {l}: expert {missing} is on no device");
        }
        if (equalExpertsPerDevice)
        {
            int low = numExperts / devices, high = (numExperts + devices - 1) / devices;
            for (int l = 0; l < numLayers; l++)
            {
                var counts = _experts.Select(d => d[l].Length).ToArray();
                if (counts.Any(c => c < low || c > high))
                {
                    throw new ArgumentException($"layer {l}: unequal expert counts per device ({string.Join(", ", counts)}) in a placement that promises " +
                        (low == high ? $"{low} experts per device" : $"{low} or {high} experts per device"));
                }
            }
        }
    }

    /// <summary>How it was made: <see cref="RoundRobinName"/>, <see cref="GreedyName"/>, <see cref="GreedyCorrelatedName"/>, or another label.</summary>
    public string Method { get; }
    /// <summary>Devices the experts are spread over.</summary>
    public int Devices { get; }
    /// <summary>MoE layers.</summary>
    public int NumLayers { get; }
    /// <summary>Experts per layer.</summary>
    public int NumExperts { get; }
    /// <summary>Whether every device holds ⌊E / D⌋ or ⌈E / D⌉ experts of each layer (checked).</summary>
    public bool EqualExpertsPerDevice { get; }
    /// <summary>What the placement was fitted on, if recorded (free text).</summary>
    public string? FittedOn { get; init; }
    /// <summary>
    /// For a placement that chose among methods (<see cref="AutoName"/>): the method whose placement
    /// this is (e.g. <see cref="GreedyCorrelatedName"/>); null otherwise.
    /// </summary>
    public string? ChosenMethod { get; init; }

    /// <summary>
    /// This placement relabelled as chosen by <paramref name="selector"/> (e.g. <see cref="AutoName"/>):
    /// the same devices per expert, <see cref="Method"/> = <paramref name="selector"/> and
    /// <see cref="ChosenMethod"/> = this placement's method.
    /// </summary>
    public ExpertPlacement ChosenBy(string selector, string? fittedOn = null) =>
        new(selector, NumLayers, NumExperts, [.. Enumerable.Range(0, Devices).Select(d => (d, (IReadOnlyList<IReadOnlyList<int>>)_experts[d]))], Devices,
            EqualExpertsPerDevice)
        { FittedOn = fittedOn ?? FittedOn, ChosenMethod = Method };

    /// <summary>The device that serves expert <paramref name="expert"/> of layer <paramref name="layer"/>.</summary>
    public int DeviceOf(int layer, int expert) => _deviceOf[layer][expert];

    /// <summary>The device that serves <paramref name="key"/>.</summary>
    public int DeviceOf(ExpertKey key) => _deviceOf[key.Layer][key.Expert];

    /// <summary>The experts of layer <paramref name="layer"/> on device <paramref name="device"/>, in increasing id order.</summary>
    public IReadOnlyList<int> ExpertsOn(int device, int layer) => _experts[device][layer];

    /// <summary>
    /// Refuses a placement that does not fit the model or the device count: an
    /// <see cref="ArgumentException"/> naming what differs (layers, experts per layer, devices).
    /// </summary>
    public void CheckFits(ModelConfig config, int devices) => CheckFits(config.NumLayers, config.NumExperts, devices, "the model");

    /// <summary>
    /// Refuses a placement for another number of layers, experts per layer or devices than given
    /// (e.g. those of a routing trace): an <see cref="ArgumentException"/> naming what differs.
    /// </summary>
    /// <param name="numLayers">MoE layers it must cover.</param>
    /// <param name="numExperts">Experts per layer it must cover.</param>
    /// <param name="devices">Devices it must use.</param>
    /// <param name="what">What the sizes belong to, for the message (e.g. "the model", "the trace").</param>
    public void CheckFits(int numLayers, int numExperts, int devices, string what = "the model")
    {
        if (NumLayers != numLayers) throw new ArgumentException($"the placement has {NumLayers} layers; {what} has {numLayers} layers");
        if (NumExperts != numExperts) throw new ArgumentException($"the placement has {NumExperts} experts per layer; {what} has {numExperts} experts per layer");
        if (Devices != devices) throw new ArgumentException($"the placement is for {Devices} devices, not the {devices} devices asked for");
    }

    /// <summary>Expert e of every layer on device e mod <paramref name="devices"/>.</summary>
    public static ExpertPlacement RoundRobin(int numLayers, int numExperts, int devices)
    {
        CheckDevices(numExperts, devices);
        var lists = Enumerable.Range(0, devices).Select(d => (IReadOnlyList<IReadOnlyList<int>>)Enumerable.Range(0, numLayers)
            .Select(_ => (IReadOnlyList<int>)[.. Enumerable.Range(0, numExperts).Where(e => e % devices == d)]).ToList()).ToList();
        return new ExpertPlacement(RoundRobinName, numLayers, numExperts, lists, equalExpertsPerDevice: true);
    }

    /// <summary>
    /// Greedy by historical load, per layer: experts by load, heaviest first, each to the device with
    /// the least load of that layer so far among those with room (⌊E / D⌋ experts each, and ⌈E / D⌉
    /// for E mod D of them); ties go to the device with the least load over the earlier layers, then
    /// to the lowest id.
    /// </summary>
    public static ExpertPlacement Greedy(ExpertLoads loads, int devices) => Build(loads, devices, 0, GreedyName);

    /// <summary>
    /// <see cref="Greedy"/> with a correlation term: putting expert e of layer l on device d costs
    /// load_l(d) + w x Σ corr(e, e') over the experts e' already on d, of layer l and of the earlier
    /// layers. load_l(d) is d's load of layer l so far in units of the layer's mean expert load (an
    /// average expert weighs 1, so a device's fair share is E / D); corr is the Pearson correlation
    /// of the two experts' per-token activations, in [-1, 1], counted only where it is
    /// distinguishable from zero (<see cref="ExpertLoads.SignificantCorrelation"/>). With w = 0.5
    /// (the paper's), a pair that always fires together costs as much as half an average expert.
    /// Earlier layers' experts count because a device runs every layer of a step: its load in a step
    /// is the sum over all its experts, whose variance grows with every positive covariance among them.
    /// </summary>
    public static ExpertPlacement GreedyCorrelated(ExpertLoads loads, int devices, double correlationWeight = DefaultCorrelationWeight) =>
        Build(loads, devices, correlationWeight, GreedyCorrelatedName);

    /// <summary>
    /// The placement <paramref name="method"/> makes from <paramref name="loads"/>. Not for
    /// <see cref="PlacementMethod.Auto"/>, which validates on traces: <see cref="AutoPlacement.Choose"/>.
    /// </summary>
    public static ExpertPlacement Create(PlacementMethod method, ExpertLoads loads, int devices) => method switch
    {
        PlacementMethod.RoundRobin => RoundRobin(loads.NumLayers, loads.NumExperts, devices),
        PlacementMethod.Greedy => Greedy(loads, devices),
        PlacementMethod.GreedyCorrelated => GreedyCorrelated(loads, devices),
        PlacementMethod.Auto => throw new ArgumentException("auto chooses by validation on the fit half's traces, not from loads: use AutoPlacement.Choose", nameof(method)),
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, "unknown placement method"),
    };

    /// <summary>The <see cref="Method"/> name of a placement method.</summary>
    public static string NameOf(PlacementMethod method) => method switch
    {
        PlacementMethod.RoundRobin => RoundRobinName,
        PlacementMethod.Greedy => GreedyName,
        PlacementMethod.GreedyCorrelated => GreedyCorrelatedName,
        PlacementMethod.Auto => AutoName,
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, "unknown placement method"),
    };

    private static void CheckDevices(int numExperts, int devices)
    {
        if (devices < 1) throw new ArgumentException($"--devices must be at least 1, got {devices}");
        if (devices > numExperts)
            throw new ArgumentException($"{devices} devices are more than the {numExperts} experts per layer: some device would hold no expert of a layer");
    }

    private static ExpertPlacement Build(ExpertLoads loads, int devices, double correlationWeight, string name)
    {
        CheckDevices(loads.NumExperts, devices);
        int layers = loads.NumLayers, experts = loads.NumExperts;
        int low = experts / devices, extra = experts % devices; // `extra` devices may take one more
        var lists = Enumerable.Range(0, devices).Select(_ => Enumerable.Range(0, layers).Select(_ => new List<int>()).ToArray()).ToArray();
        var earlier = new double[devices]; // load over the earlier layers, in mean-expert units
        for (int l = 0; l < layers; l++)
        {
            var load = loads.Assignments[l];
            double mean = load.Average();
            var onDevice = new double[devices];
            int atHigh = 0;
            foreach (int e in Enumerable.Range(0, experts).OrderByDescending(e => load[e]).ThenBy(e => e))
            {
                int best = -1;
                double bestCost = double.PositiveInfinity;
                for (int d = 0; d < devices; d++)
                {
                    int count = lists[d][l].Count;
                    if (count > low || (count == low && atHigh >= extra)) continue; // no room
                    double cost = onDevice[d];
                    if (correlationWeight != 0)
                    {
                        for (int l2 = 0; l2 <= l; l2++)
                        {
                            foreach (int other in lists[d][l2]) cost += correlationWeight * loads.SignificantCorrelation(l, e, l2, other);
                        }
                    }
                    // Strictly better by more than rounding; ties: less load over earlier layers, then lower id.
                    if (best < 0 || cost < bestCost - 1e-12 || (Math.Abs(cost - bestCost) <= 1e-12 && earlier[d] < earlier[best] - 1e-12))
                    {
                        best = d;
                        bestCost = cost;
                    }
                }
                if (lists[best][l].Count == low) atHigh++;
                lists[best][l].Add(e);
                onDevice[best] += mean > 0 ? load[e] / mean : 0;
            }
            for (int d = 0; d < devices; d++) earlier[d] += onDevice[d];
        }
        var result = lists.Select(d => (IReadOnlyList<IReadOnlyList<int>>)d.Select(l => (IReadOnlyList<int>)l).ToList()).ToList();
        return new ExpertPlacement(name, layers, experts, result, equalExpertsPerDevice: true) { FittedOn = loads.Source };
    }

    /// <summary>
    /// Writes the placement as JSON: format, method, chosen_method (only for a placement that chose
    /// among methods), devices, num_layers, num_experts, equal_experts_per_device, fitted_on (if
    /// known), and per device its experts of each layer. chosen_method is optional, so files without
    /// it (written before it existed) still load, and a reader that ignores it still gets a valid
    /// placement.
    /// </summary>
    public void Save(string path) => File.WriteAllText(path, ToJson());

    /// <summary>The JSON that <see cref="Save"/> writes (each device's expert lists on one line).</summary>
    public string ToJson()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append("{\n");
        sb.Append(inv, $"  \"format\": \"{Format}\",\n  \"version\": {Version},\n");
        sb.Append(inv, $"  \"method\": {JsonSerializer.Serialize(Method)},\n");
        if (ChosenMethod is not null) sb.Append(inv, $"  \"chosen_method\": {JsonSerializer.Serialize(ChosenMethod)},\n");
        sb.Append(inv, $"  \"devices\": {Devices},\n  \"num_layers\": {NumLayers},\n  \"num_experts\": {NumExperts},\n");
        sb.Append(inv, $"  \"equal_experts_per_device\": {(EqualExpertsPerDevice ? "true" : "false")},\n");
        if (FittedOn is not null) sb.Append(inv, $"  \"fitted_on\": {JsonSerializer.Serialize(FittedOn)},\n");
        sb.Append("  \"placement\": [\n");
        for (int d = 0; d < Devices; d++)
        {
            string layers = string.Join(", ", _experts[d].Select(l => "[" + string.Join(", ", l) + "]"));
            sb.Append(inv, $"    {{\"device\": {d}, \"experts\": [{layers}]}}{(d + 1 < Devices ? "," : "")}\n");
        }
        sb.Append("  ]\n}\n");
        return sb.ToString();
    }

    /// <summary>
    /// Reads a placement that <see cref="Save"/> wrote. A file that is not one (not JSON, a field
    /// missing or of the wrong type) is an <see cref="InvalidDataException"/>; a placement that is
    /// not consistent (an expert on no device or on two, a device id out of range, unequal counts in
    /// a placement that promises equal ones, a device listing another number of layers) is an
    /// <see cref="ArgumentException"/> naming the problem. Check it against the model and the device
    /// count with <see cref="CheckFits(ModelConfig, int)"/>.
    /// </summary>
    public static ExpertPlacement Load(string path)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not an expert placement ({e.Message})", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: not an expert placement (expected a JSON object)");
            if (!root.TryGetProperty("format", out var format) || format.ValueKind != JsonValueKind.String || format.GetString() != Format)
                throw new InvalidDataException($"{path}: not an expert placement (\"format\" is not \"{Format}\")");
            int version = Int(root, "version", path);
            if (version != Version) throw new InvalidDataException($"{path}: expert placement version {version}; this build reads version {Version}");
            string method = Str(root, "method", path);
            int devices = Int(root, "devices", path), layers = Int(root, "num_layers", path), experts = Int(root, "num_experts", path);
            bool equal = root.TryGetProperty("equal_experts_per_device", out var eq) && eq.ValueKind is JsonValueKind.True or JsonValueKind.False
                ? eq.GetBoolean()
                : throw new InvalidDataException($"{path}: \"equal_experts_per_device\" must be true or false");
            string? fitted = root.TryGetProperty("fitted_on", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() : null;
            string? chosenMethod = root.TryGetProperty("chosen_method", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
            if (!root.TryGetProperty("placement", out var placement) || placement.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{path}: \"placement\" must be a list of devices");
            var entries = new List<(int, IReadOnlyList<IReadOnlyList<int>>)>();
            int index = 0;
            foreach (var entry in placement.EnumerateArray())
            {
                string where = $"placement[{index++}]";
                if (entry.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: {where} must be an object with device and experts");
                int device = Int(entry, "device", path, where);
                if (!entry.TryGetProperty("experts", out var lists) || lists.ValueKind != JsonValueKind.Array
                    || lists.EnumerateArray().Any(l => l.ValueKind != JsonValueKind.Array || l.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out _))))
                    throw new InvalidDataException($"{path}: {where}.experts must be a list (one per layer) of lists of expert ids");
                entries.Add((device, [.. lists.EnumerateArray().Select(l => (IReadOnlyList<int>)[.. l.EnumerateArray().Select(e => e.GetInt32())])]));
            }
            if (entries.Count != devices)
            {
                throw new ArgumentException($"{path}: the placement says {devices} devices but lists {entries.Count}" +
                    (entries.Count < devices ? "" : $"; device ids run 0..{devices - 1}"));
            }
            try
            {
                return new ExpertPlacement(method, layers, experts, entries, devices, equal) { FittedOn = fitted, ChosenMethod = chosenMethod };
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"{path}: {e.Message}", e);
            }
        }
    }

    private static int Int(JsonElement element, string name, string path, string? where = null) =>
        element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)
            ? i
            : throw new InvalidDataException($"{path}: {(where is null ? "" : where + ".")}\"{name}\" must be an integer");

    private static string Str(JsonElement element, string name, string path) =>
        element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String
            ? v.GetString()!
            : throw new InvalidDataException($"{path}: \"{name}\" must be a string");
}
