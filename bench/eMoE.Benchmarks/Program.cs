using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using eMoE.Benchmarks;

// dotnet run -c Release --project bench/eMoE.Benchmarks -- --filter '*' [--device cpu|cuda|cpu,cuda]
// (see bench/README.md)
string[] rest;
try
{
    rest = BenchSettings.TakeDeviceOption(args);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}
if (BenchSettings.CheckDevices() is string problem)
{
    Console.Error.WriteLine(problem);
    return 1;
}
var config = DefaultConfig.Instance
    .AddColumn(ValueColumn.MegabytesPerCall, ValueColumn.GigabytesPerSecond, ValueColumn.TokensPerSecond);
BenchmarkSwitcher.FromAssembly(typeof(BenchSettings).Assembly).Run(rest, config);
return 0;
