using NUnit.Framework;
namespace eMoE.Tests;

/// <summary>Locations inside the repository, found from the test binary's directory.</summary>
internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Combine(params string[] parts) => Path.Combine([Root, .. parts]);

    public static string ShippedModel => Combine("weights", "tiny-mixtral");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "eMoE.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("eMoE.sln not found above the test directory");
    }
}
