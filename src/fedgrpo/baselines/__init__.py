"""The federated baselines FedGRPO is compared with: FedPETuning and DPSDA-FL (their client and server
computations; how their messages travel is `engines.fedavg`, how they are run and compared is
`bench`)."""
