// Flex Consumption function app (Python 3.11) running as the user-assigned identity.
// Every app setting the code reads is set here; no keys or connection strings with secrets.
param name string
param planName string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
param deploymentContainerName string
param appInsightsConnectionString string
param maximumInstanceCount int
param instanceMemoryMB int
param zoneRedundant bool
param provisioningQueue string
param workQueue string
param bulkQueue string
param callbackQueue string
param callbackAllowedHosts string
param resultsTable string
param pacingTable string
param subscriptionsTable string
param bulkContainer string
param bulkSchedule string
param graphBaseUrl string
param maxAttempts int
param enableEntraAuth bool
param authClientId string
param authAllowedAudiences string
param allowedCallerAppIds string
param allowedCallerObjectIds string

// Who may call the API once Entra ID sign-in is on: App Service's own policy refuses anyone else
// (it requires the app AND the identity when both lists are set), and the app checks the
// signed-in caller against ALLOWED_CALLER_IDS again (any of its ids on the joined list).
var callerAppIds = filter(map(split(allowedCallerAppIds, ','), id => trim(id)), id => !empty(id))
var callerObjectIds = filter(map(split(allowedCallerObjectIds, ','), id => trim(id)), id => !empty(id))
var allowedCallerIds = enableEntraAuth ? join(concat(callerAppIds, callerObjectIds), ',') : ''
// Tokens callers get for the API carry `api://<client id>` (v1) or the client id (v2) as audience.
var audiences = filter(map(split(authAllowedAudiences, ','), audience => trim(audience)), audience => !empty(audience))
var allowedAudiences = empty(audiences) ? ['api://${authClientId}', authClientId] : audiences
// Sign-in without a caller list would let any application of the tenant in: refuse to deploy it.
var noCallerNamed = empty(callerAppIds) && empty(callerObjectIds)
var missingClientId = enableEntraAuth && empty(authClientId)
var missingCallers = enableEntraAuth && noCallerNamed
var entraAuthProblem = missingClientId ? 'ENABLE_ENTRA_AUTH=true needs AUTH_CLIENT_ID, the client id of the API app registration (azd env set AUTH_CLIENT_ID <id>).' : (missingCallers ? 'ENABLE_ENTRA_AUTH=true needs ALLOWED_CALLER_APP_IDS or ALLOWED_CALLER_OBJECT_IDS: without them any application of the tenant that gets a token for the API is let in.' : '')

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy is optional (ZONE_REDUNDANT, off by default for cost): on Flex it keeps at least two always-ready instances per function group, billed while idle
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: callers authenticate with function keys and optionally Entra ID tokens; Power Platform custom connectors cannot present client certificates
  // checkov:skip=CKV_AZURE_222: Power Automate reaches the API over the internet; Entra ID sign-in can be switched on (enableEntraAuth)
  // checkov:skip=CKV_AZURE_18: http20Enabled is left at the platform default: the portal offers no HTTP version setting for Flex Consumption apps, and Flex sites refuse siteConfig properties they do not take (error 51021)
  // checkov:skip=CKV_AZURE_67: as CKV_AZURE_18: no HTTP version setting is offered for Flex Consumption apps
  // checkov:skip=CKV_AZURE_78: Flex Consumption sites reject siteConfig.ftpsState (error 51021); Flex deploys only from the blob container named in functionAppConfig
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no minimum worker count; with zoneRedundant the platform keeps at least two always-ready instances per function group
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not offer the platform health check (healthCheckPath)
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    // Only what Flex Consumption sites take: ftpsState, alwaysOn, linuxFxVersion and the other
    // worker and scale properties are rejected there (error 51021); runtime and scale live in
    // functionAppConfig below.
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        // Host storage by identity (no connection string, no key).
        { name: 'AzureWebJobsStorage__accountName', value: storageAccountName }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
        // The app's own clients and its Graph token use the same identity.
        { name: 'AZURE_CLIENT_ID', value: identityClientId }
        { name: 'PROVISIONING_QUEUE', value: provisioningQueue }
        { name: 'WORK_QUEUE', value: workQueue }
        { name: 'BULK_QUEUE', value: bulkQueue }
        { name: 'RESULTS_TABLE', value: resultsTable }
        { name: 'PACING_TABLE', value: pacingTable }
        // The trigger's subscriptions: their callback URLs are secrets, readable by this app only.
        { name: 'SUBSCRIPTIONS_TABLE', value: subscriptionsTable }
        { name: 'GRAPH_BASE_URL', value: graphBaseUrl }
        { name: 'GRAPH_CREDENTIAL', value: 'azure' }
        { name: 'GRAPH_TIMEOUT_SECONDS', value: '60' }
        { name: 'GRAPH_MAX_CONCURRENT_BATCHES', value: '4' }
        { name: 'MAX_ATTEMPTS', value: string(maxAttempts) }
        { name: 'BACKOFF_BASE_SECONDS', value: '2' }
        { name: 'BACKOFF_MAX_SECONDS', value: '300' }
        { name: 'MAX_DEQUEUE_COUNT', value: '5' }
        { name: 'STATUS_RETRY_AFTER_SECONDS', value: '5' }
        { name: 'STATUS_RETRY_AFTER_MAX_SECONDS', value: '60' }
        // Finished jobs' results POSTed to the caller's callbackUrl: their queue, and where they may go.
        { name: 'CALLBACK_QUEUE', value: callbackQueue }
        { name: 'CALLBACK_ALLOWED_HOSTS', value: callbackAllowedHosts }
        { name: 'BATCH_LINGER_SECONDS', value: '0.1' }
        { name: 'QUEUE_EXTRA_MESSAGES', value: '64' }
        { name: 'QUEUE_EXTRA_LEASE_SECONDS', value: '300' }
        { name: 'CLAIM_TIMEOUT_SECONDS', value: '300' }
        { name: 'REPLICATION_RETRY_SECONDS', value: '10' }
        { name: 'REPLICATION_MAX_WAIT_SECONDS', value: '900' }
        { name: 'TEAMS_OPERATION_POLL_SECONDS', value: '30' }
        { name: 'TEAMS_OPERATION_MAX_WAIT_SECONDS', value: '3600' }
        { name: 'GRAPH_WRITES_PER_SECOND', value: '19.5' }
        { name: 'GRAPH_READ_UNITS_PER_SECOND', value: '300' }
        { name: 'PACING_FALLBACK_SHARE', value: '0.25' }
        { name: 'THROTTLE_MAX_WAIT_SECONDS', value: '3600' }
        { name: 'THROTTLE_LOCAL_WAIT_SECONDS', value: '30' }
        // Bulk user updates: CSV files dropped in this container, picked up on this NCRONTAB schedule.
        { name: 'BULK_CONTAINER', value: bulkContainer }
        { name: 'BULK_SCHEDULE', value: bulkSchedule }
        { name: 'BULK_WAIT_SECONDS', value: '240' }
        { name: 'BULK_CHANGE_DETECTION', value: 'true' }
        // Set only with Entra ID sign-in: without it, nothing vouches for the caller's identity.
        { name: 'ALLOWED_CALLER_IDS', value: empty(entraAuthProblem) ? allowedCallerIds : fail(entraAuthProblem) }
        // Telemetry by identity: the component has local auth disabled.
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD;ClientId=${identityClientId}' }
        // The app's own spans and metrics (batching.telemetry) go to the same component, signed
        // in with the identity the authentication string names.
        { name: 'TELEMETRY_EXPORTER', value: 'azure' }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Optional Entra ID sign-in in front of the API (App Service authentication).
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (enableEntraAuth) {
  // checkov:skip=CKV_AZURE_13: this resource IS the App Service authentication setting
  // checkov:skip=CKV_AZURE_63: checkov reads this authsettingsV2 child as a whole site; logging is the site's, not this resource's
  // checkov:skip=CKV_AZURE_65: as above: error pages are the site's setting
  // checkov:skip=CKV_AZURE_66: as above: request tracing is the site's setting
  // checkov:skip=CKV_AZURE_80: as above, and the app runs Python, not .NET
  // checkov:skip=CKV_AZURE_88: as above: Flex Consumption deploys from a blob container, not Azure Files
  // checkov:skip=CKV_AZURE_222: as above: network access is the site's setting (see its skip)
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      // The anonymous routes (the connector definition): open even with sign-in on.
      excludedPaths: [
        '/api/openapi.json'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: allowedAudiences
          defaultAuthorizationPolicy: {
            allowedApplications: callerAppIds
            allowedPrincipals: {
              identities: callerObjectIds
            }
          }
        }
      }
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
