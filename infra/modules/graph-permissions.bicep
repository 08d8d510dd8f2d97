// Graph application permissions for the identity (Microsoft Graph Bicep extension).
// Deploying this needs Privileged Role Administrator; see README for the manual route.
extension microsoftGraphV1

param principalId string
param appRoles array

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

resource assignments 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in appRoles: {
  appRoleId: filter(graph.appRoles, candidate => candidate.value == role)[0].id
  principalId: principalId
  resourceId: graph.id
}]
