using eMoE.Model;
using NUnit.Framework;

namespace eMoE.Tests.Model;

/// <summary>Checkpoint and config validation: every malformed input gets an error naming the file and the item.</summary>
public sealed class CheckpointTests
{
    private string _dir = null!;

    [SetUp]
    public void MakeDirectory() => _dir = Directory.CreateTempSubdirectory("emoe-test-").FullName;

    [TearDown]
    public void RemoveDirectory() => Directory.Delete(_dir, recursive: true);

    private string File(string name) => Path.Combine(_dir, name);

    private static ModelFormatException Fails(Action action) => Assert.Throws<ModelFormatException>(() => action())!;

    [Test]
    public void ReadsTensorsOfAValidFile()
    {
        SafetensorsBuilder.Write(File("model.safetensors"), [("a", [2, 3], [1, 2, 3, 4, 5, 6]), ("b", [1], [7])]);
        using var checkpoint = Checkpoint.Open(_dir);
        var a = checkpoint.Require("a", 2, 3);
        Assert.That(checkpoint.ReadF32(a), Is.EqualTo(new float[] { 1, 2, 3, 4, 5, 6 }));
        Assert.That(checkpoint.ReadF32(checkpoint.Get("b")), Is.EqualTo(new float[] { 7 }));
        Assert.That(checkpoint.TotalBytes, Is.EqualTo(28));
    }

    [Test]
    public void HeaderLengthBeyondTheFile()
    {
        SafetensorsBuilder.WriteRaw(File("model.safetensors"), "{}", 0, declaredHeaderLength: 1 << 20);
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("model.safetensors").And.Contain("header length"));
    }

    [Test]
    public void TruncatedFile()
    {
        System.IO.File.WriteAllBytes(File("model.safetensors"), [1, 2, 3]);
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("too short"));
    }

    [Test]
    public void HeaderIsNotJson()
    {
        SafetensorsBuilder.WriteRaw(File("model.safetensors"), "{not json", 0);
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("not valid JSON"));
    }

    [Test]
    public void UnknownDtype()
    {
        SafetensorsBuilder.WriteRaw(File("model.safetensors"), """{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}""", 16);
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("'w'").And.Contain("I64"));
    }

    [Test]
    public void ShapeDoesNotMatchByteRange()
    {
        SafetensorsBuilder.WriteRaw(File("model.safetensors"), """{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8);
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("'w'").And.Contain("12 bytes"));
    }

    [Test]
    public void RangeOutsideTheFile()
    {
        SafetensorsBuilder.WriteRaw(File("model.safetensors"), """{"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}""", 4);
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("'w'").And.Contain("outside"));
    }

    [Test]
    public void OverlappingTensors()
    {
        SafetensorsBuilder.WriteRaw(File("model.safetensors"),
            """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12);
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("'a'").And.Contain("'b'").And.Contain("overlap"));
    }

    [Test]
    public void MissingCheckpoint() =>
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("model.safetensors"));

    [Test]
    public void ShardIndexNamesAMissingTensor()
    {
        SafetensorsBuilder.Write(File("part-1.safetensors"), [("a", [1], [1])]);
        System.IO.File.WriteAllText(File("model.safetensors.index.json"), """{"weight_map":{"a":"part-1.safetensors","b":"part-1.safetensors"}}""");
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("'b'").And.Contain("missing"));
    }

    [Test]
    public void ShardIndexNamesAMissingFile()
    {
        System.IO.File.WriteAllText(File("model.safetensors.index.json"), """{"weight_map":{"a":"part-9.safetensors"}}""");
        Assert.That(Fails(() => Checkpoint.Open(_dir)).Message, Does.Contain("part-9.safetensors"));
    }

    [Test]
    public void RequireNamesMissingAndMisshapenTensors()
    {
        SafetensorsBuilder.Write(File("model.safetensors"), [("a", [2, 3], new float[6])]);
        using var checkpoint = Checkpoint.Open(_dir);
        Assert.That(Fails(() => checkpoint.Require("zzz", 1)).Message, Does.Contain("'zzz'").And.Contain("missing"));
        Assert.That(Fails(() => checkpoint.Require("a", 3, 2)).Message, Does.Contain("'a'").And.Contain("[2, 3]").And.Contain("[3, 2]"));
    }

    [Test]
    public void ShippedFixtureWithATensorRemovedIsRejected()
    {
        // Copy the Mixtral fixture but drop one expert tensor from its header.
        string source = RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32");
        System.IO.File.Copy(Path.Combine(source, "config.json"), File("config.json"));
        using (var original = Checkpoint.Open(source))
        {
            var kept = original.Tensors.Where(t => t.Name != "model.layers.1.block_sparse_moe.experts.3.w2.weight")
                .Select(t => (t.Name, t.Shape, original.ReadF32(t))).ToList();
            SafetensorsBuilder.Write(File("model.safetensors"), kept);
        }
        var config = ModelConfig.Load(_dir);
        using var checkpoint = Checkpoint.Open(_dir);
        Assert.That(Fails(() => WeightLayout.Validate(config, checkpoint)).Message,
            Does.Contain("model.layers.1.block_sparse_moe.experts.3.w2.weight"));
    }
}
