// Producers (other systems) may add messages to the public provisioning queue and nothing
// else: the app's work and bulk queues carry work messages that only the app may write, so no
// producer role is granted on the account or on those queues.
param storageAccountName string
param queueName string

@description('Object ids of the identities allowed to drop jobs on the provisioning queue.')
param principalIds array

var queueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: queueName
}

resource senders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in principalIds: {
  name: guid(queue.id, principalId, queueDataMessageSender)
  scope: queue
  properties: {
    principalId: principalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueDataMessageSender)
  }
}]
