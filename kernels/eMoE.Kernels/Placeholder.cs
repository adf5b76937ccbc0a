namespace eMoE.Kernels;
