namespace eMoE.Tests;
