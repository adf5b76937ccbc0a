using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using eMoE.Benchmarks;

// dotnet run -c Release --project bench/eMoE.Benchmarks -- --filter '*' [--device cpu|cuda|cpu,cuda]
var config = DefaultConfig.Instance
    .AddColumn(ValueColumn.MegabytesPerCall, ValueColumn.GigabytesPerSecond, ValueColumn.TokensPerSecond);
BenchmarkSwitcher.FromAssembly(typeof(BenchSettings).Assembly).Run(BenchSettings.TakeDeviceOption(args), config);
